#!/bin/sh
# PID 1 of the throwaway User-Mode Linux kernel that tests/uml/run.sh boots over the host's
# files (read-only). Everything it mounts exists only in that kernel. It mounts cgroup v2 with
# every controller (nothing is bound to cgroup v1 here), enables pids, memory and cpu for the
# children of the root group, where this process and the tests stay (the root group may hold
# processes: a delegated subtree), runs the command that run.sh left in TC_UML_OUT and writes
# its output and exit status back there, then powers off.
PATH=$TC_UML_PYTHON_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin  # the Python's own scripts first
export PATH
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o size=2g tmp /tmp
mount -t tmpfs run /run
mount -t hostfs -o "$TC_UML_OUT" out /mnt
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+pids +memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /tmp/home
export HOME=/tmp/home TC_SCRATCH_CGROUP_KERNEL=1 PYTHONDONTWRITEBYTECODE=1
{
    echo "kernel: $(uname -r); cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers);" \
        "enabled for children: $(cat /sys/fs/cgroup/cgroup.subtree_control); memory: $(free -m | awk '/Mem:/ {print $2}') MiB"
    cd "$TC_UML_REPO" && sh /mnt/command
    echo $? > /mnt/status
} > /mnt/log 2>&1
sync
poweroff -f

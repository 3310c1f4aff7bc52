"""`nbgrader collect` that copies only what a student can have written.

The exchange's inbound folder is world-writable: anyone can plant a submission that is a
symbolic link (to solutions/, to another student's work, to /dev/zero), or holds links, hard
links, devices or pipes. nbgrader's own collect copies with shutil.copytree, which follows them
and files whatever they point at as the student's submission. This collector (configured in
nbgrader_config.py through nbgrader's ExchangeFactory) refuses a submission that is not a real
folder, and copies only regular, singly-linked files from it, never following a link.
"""

from __future__ import annotations

import os
import pathlib
import stat

from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.utils import ignore_patterns

from autograder.core import safe_files


class SafeExchangeCollect(ExchangeCollect):
    """ExchangeCollect whose copy follows no link and takes only regular files."""

    def do_copy(self, src, dest, log=None):
        source = pathlib.Path(src)
        try:
            info = os.lstat(source)
        except OSError as error:
            self.log.error("Not collecting %s: %s", src, error.strerror)
            return
        if not stat.S_ISDIR(info.st_mode):
            self.log.error(
                "Not collecting %s: %s, not a submission folder", src, safe_files.refusal(info) or "it is not a folder"
            )
            return
        ignored = ignore_patterns(
            exclude=self.coursedir.ignore,
            include=self.coursedir.include,
            max_file_size=self.coursedir.max_file_size,
            log=self.log,
        )
        budget = 1000 * self.coursedir.max_dir_size
        plan, total = [], 0
        for relative, entry in safe_files.walk_entries(source):
            if any(
                part in ignored(str(source / pathlib.Path(*relative.parts[:i])), [part])
                for i, part in enumerate(relative.parts)
            ):
                continue
            if stat.S_ISDIR(entry.st_mode):
                continue
            reason = safe_files.refusal(entry)
            if reason is not None:
                self.log.warning("Not collecting %s: %s", source / relative, reason)
                continue
            total += entry.st_size
            plan.append(relative)
        if total > budget:
            self.log.error("Not collecting %s: its files hold %d bytes, over the limit of %d", src, total, budget)
            return
        os.makedirs(dest, exist_ok=True)
        for relative in plan:
            try:
                data = safe_files.read_regular(source / relative, budget, root=source)
            except safe_files.UnsafeFile as error:  # changed since it was listed
                self.log.warning("Not collecting %s: %s", source / relative, error)
                continue
            target = pathlib.Path(dest) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if self.coursedir.groupshared:
            for dirname, _, _ in os.walk(dest):
                mode = os.stat(dirname).st_mode
                if mode & 0o2770 != 0o2770:
                    try:
                        os.chmod(dirname, (mode | 0o2770) & 0o2777)
                    except PermissionError:
                        self.log.warning("Could not make %s groupshared", dirname)

"""Hidden checks of the induction-heads assignment (Exercises 2 and 3 of the Transformer Circuits exercises)."""

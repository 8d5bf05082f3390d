"""Action events and vector progress (issue 5, seed 003): the fold, the action agent and the
progress writer."""

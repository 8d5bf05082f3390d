"""Action events and vector progress : the fold, the action stream and the
progress writer."""

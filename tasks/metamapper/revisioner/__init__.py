"""The revisioner: inspect every datastore on a schedule and record what changed."""

"""Scoring: rating and ranking metrics (one named function per evaluation protocol), the test
evaluation of a finished run, and cold-start predictions."""

"""The `asit` command line: translation only (parse, load a config, call a job, print)."""

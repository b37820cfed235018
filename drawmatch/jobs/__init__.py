"""One module per job, each with its config and `run(config)`: the entry points that the
`drawmatch` command and `jobs/<job>.py` (what `ray job submit` runs) call. A job uses the library
layers below it and never imports another job."""

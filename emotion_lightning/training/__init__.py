"""Run infrastructure: checkpoint files and resume, loggers, config resolvers, run facts, failure records,
and the fit-and-test flow the train and eval commands share."""

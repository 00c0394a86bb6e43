"""Ray job submission support: what a job's working dir uploads, checked before it is sent."""

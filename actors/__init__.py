"""Ray actors and tasks: thin shells that own state and schedule work; the logic lives in `orchestrator`."""

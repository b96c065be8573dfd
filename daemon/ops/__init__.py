"""Operations: the admin CLI, the status report behind /status and the CLI, /metrics."""

"""Where generation runs: engine backends, the Ray actors hosting them, routing and retries."""

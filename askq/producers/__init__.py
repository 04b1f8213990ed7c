"""Ways to put jobs in: the Python client, the askq CLI commands and the HTTP API."""

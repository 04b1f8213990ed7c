"""The HTTP API's routes, one APIRouter per area: jobs, dead letters, probes and metrics."""

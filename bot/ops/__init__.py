"""Running the service: logging and Prometheus metrics."""

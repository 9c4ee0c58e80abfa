"""gateway.cli: real gateway processes: lifecycle, --processes workers and hand-over, outages at start-up."""

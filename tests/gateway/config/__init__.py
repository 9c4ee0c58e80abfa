"""gateway.config: loading appsettings.json and the environment into the typed settings."""

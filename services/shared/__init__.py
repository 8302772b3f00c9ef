"""What the worker and the supervisor share: configuration, logging, our own schema, PostgreSQL."""

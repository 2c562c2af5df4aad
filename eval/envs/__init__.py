"""Built-in task environments. Each suite module defines an `Env` subclass and a `Suite` entry."""

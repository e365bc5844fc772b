"""Optional integrations, one module per library: install the matching extra to use one."""

__all__: list[str] = []

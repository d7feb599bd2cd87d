"""Running the system: settings, the composition root (wiring), the orchestration port, `evolution up`, doctor and verify.
May import every room below it; only the CLI and the entry points outside evolution/ import it.
"""

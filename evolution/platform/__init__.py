"""Running the system: settings, the composition root (wiring), the orchestration port, `evolution up`, doctor and verify,
model export and the signing keys' rotation.
May import every room below it; only the CLI and the entry points outside evolution/ import it.
"""

"""The `evolution` command line: one module per command group, thin over the services platform builds.
May import every room of evolution/ (it is the top layer).
"""

"""The registry's Alembic migrations (env.py, script.py.mako, versions/), shipped in the wheel as package data.

``evolution.registry.db`` finds this directory with ``importlib.resources`` and builds the Alembic configuration
in code, so ``evolution db upgrade`` needs neither the repository nor an alembic.ini.
"""

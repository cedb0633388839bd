"""pytest's entry point (`-p skeldir.pytest_plugin` in pytest.ini): loaded before
pytest-django imports the settings, it starts or reuses the embedded PostgreSQL when
DATABASE_URL is unset, as manage.py does."""

from skeldir.embedded_database import use_embedded_database_unless_configured

use_embedded_database_unless_configured()

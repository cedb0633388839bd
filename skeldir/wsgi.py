import os

from django.core.wsgi import get_wsgi_application

from skeldir.embedded_database import use_embedded_database_unless_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skeldir.settings")
use_embedded_database_unless_configured()

application = get_wsgi_application()

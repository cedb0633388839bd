from urllib.parse import quote, urlencode


def broker_url_for_database(database: dict) -> str:
    """kombu's SQLAlchemy-transport URL for a Django database (the development broker)."""
    user = quote(database["USER"], safe="")
    password = quote(database.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}" if password else user
    host, port = database.get("HOST") or "", str(database.get("PORT") or "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        query = urlencode({"host": host, **({"port": port} if port else {})})
        return f"sqla+postgresql+psycopg://{credentials}@/{database['NAME']}?{query}"
    netloc = f"{host}:{port}" if port else host
    return f"sqla+postgresql+psycopg://{credentials}@{netloc}/{database['NAME']}"

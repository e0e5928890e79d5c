"""ASGI entry point for uvicorn workers: settings from the environment."""

from healthlink.api.app import create_app
from healthlink.settings import load_settings

app = create_app(load_settings())

"""Access: the request context and the scoped repository through which all data flows."""

from healthlink.access.context import Actor, RequestContext
from healthlink.access.repository import Repository, Services, Written
from healthlink.access.scopes import Scope, parse_scopes

__all__ = ["Actor", "RequestContext", "Repository", "Services", "Written", "Scope", "parse_scopes"]

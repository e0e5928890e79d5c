"""Accounts: staff users and machine clients, passwords, access tokens."""

from healthlink.accounts.service import (
    AccountService, add_client, add_user, TokenIssued,
)

__all__ = ["AccountService", "add_client", "add_user", "TokenIssued"]

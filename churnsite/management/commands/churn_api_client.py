"""Create (or rotate, or revoke) an API service client and print its token."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from churnsite.services import ApiClientError, api_client_create, api_client_revoke


class Command(BaseCommand):
    help = (
        "Create the API service client NAME (it may read scores and alerts, ingest data and request real-time "
        "scores) and print its token on stdout; send it as 'Authorization: Token <token>'. Running it again "
        "prints the same token; --rotate replaces it, --revoke deletes it and deactivates the client."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="user name of the client, e.g. crm-sync")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--rotate", action="store_true", help="replace the token (the old one stops working)")
        action.add_argument("--revoke", action="store_true", help="delete the token and deactivate the client")

    def handle(self, *args: object, name: str, rotate: bool, revoke: bool, **options: object) -> None:
        if revoke:
            if not api_client_revoke(name=name):
                raise CommandError(f"no service client named {name!r}")
            self.stderr.write(f"service client {name!r} revoked")
            return
        try:
            credentials = api_client_create(name=name, rotate=rotate)
        except ApiClientError as error:
            raise CommandError(str(error)) from None
        state = "created" if credentials.created else ("token rotated" if credentials.rotated else "exists")
        self.stderr.write(f"service client {credentials.username!r}: {state}")
        self.stdout.write(credentials.token)

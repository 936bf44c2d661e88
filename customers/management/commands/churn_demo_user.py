"""Create (or reset) the demo staff user and print its credentials. Refuses to run with DEBUG off."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create or reset the demo staff user 'demo' with a fresh password (DEBUG only)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--username", default="demo")

    def handle(self, *args: object, username: str, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("the demo user exists only with DEBUG on; create real staff with createsuperuser")
        password = secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": "demo@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            self.style.SUCCESS(
                f"{'created' if created else 'reset'} demo staff user -> username: {username}  password: {password}"
            )
        )
        (settings.VAR_DIR / "demo-credentials.txt").write_text(f"username: {username}\npassword: {password}\n")

"""Create (or reset) the demo staff user and print its credentials. Refuses to run with DEBUG off."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

DEMO_EMAIL = "demo@example.com"  # marks the users this command made: only those are ever reset


class Command(BaseCommand):
    help = (
        "Create or reset the demo staff user 'demo' with a fresh password (DEBUG only). Only a user this command "
        "made is ever reset."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--username", default="demo")

    def handle(self, *args: object, username: str, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("the demo user exists only with DEBUG on; create real staff with createsuperuser")
        user_model = get_user_model()
        longest = user_model._meta.get_field(user_model.USERNAME_FIELD).max_length or 150
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError as error:
            raise CommandError(f"{username!r} is not a valid user name: {' '.join(error.messages)}") from None
        if len(username) > longest:
            raise CommandError(f"the user name is {len(username)} characters long; at most {longest} fit")
        password = secrets.token_urlsafe(12)
        user, created = user_model.objects.get_or_create(username=username, defaults={"email": DEMO_EMAIL})
        if not created and user.email != DEMO_EMAIL:
            # Somebody's real account: never give it a new password or superuser rights.
            raise CommandError(f"user {username!r} exists and is not a demo user; choose another --username")
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            self.style.SUCCESS(
                f"{'created' if created else 'reset'} demo staff user -> username: {username}  password: {password}"
            )
        )
        (settings.VAR_DIR / "demo-credentials.txt").write_text(f"username: {username}\npassword: {password}\n")

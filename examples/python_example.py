"""guildkey from Python (requests): verify the key, check a ban, add a role.

Usage: GUILDKEY_URL=http://127.0.0.1:8080 GUILDKEY_KEY=gk_live_... GUILD_ID=... USER_ID=... ROLE_ID=... \
       python3 python_example.py
"""
import os
import sys

import requests


class GuildKeyError(Exception):
    """An error answer: `reason` is machine-readable (e.g. insufficient_scope)."""

    def __init__(self, status, reason, message):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason = status, reason


class GuildKey:
    def __init__(self, base_url, api_key, timeout=10):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _call(self, method, path, **kwargs):
        resp = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        body = resp.json()
        if not body.get("success"):
            err = body["error"]
            raise GuildKeyError(err["code"], err["reason"], err["message"])
        return body["data"]

    def verify(self):
        return self._call("GET", "/v1/verify")

    def is_banned(self, guild_id, user_id):
        return self._call("GET", f"/v1/guilds/{guild_id}/bans/{user_id}")["banned"]

    def add_role(self, guild_id, user_id, role_id):
        return self._call("PUT", f"/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}")


def main():
    env = os.environ
    gk = GuildKey(env["GUILDKEY_URL"], env["GUILDKEY_KEY"])
    key = gk.verify()
    print(f"key {key['name']} ({key['prefix']}) scopes={','.join(key['scopes'])}")
    print(f"banned={str(gk.is_banned(env['GUILD_ID'], env['USER_ID'])).lower()}")
    try:
        result = gk.add_role(env["GUILD_ID"], env["USER_ID"], env["ROLE_ID"])
        print(f"role changed={str(result['changed']).lower()} dry_run={str(result['dry_run']).lower()}")
    except GuildKeyError as e:
        print(f"role error={e.reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

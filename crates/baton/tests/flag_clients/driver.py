"""Drives a real flag client for Baton's tests: OpenFeature with the OFREP
provider, or the Unleash Python SDK. Reads one command per line on stdin,
answers one JSON line on stdout:

  on FLAG USER          -> {"on": bool}
  who FLAG N            -> {"users": [ids of user-0..user-N-1 that get FLAG]}
  wait FLAG USER BOOL S -> {"on": bool, "seconds": float} once FLAG is BOOL
                           for USER, or after S seconds
  eval FLAG KIND CONTEXT
                        -> {"on": bool or null, "variant": name or null,
                            "error": OpenFeature error code or null}
                           KIND is "bool" or "variants"; CONTEXT is OFREP's
                           flat JSON context (targetingKey and attributes);
                           the Unleash client gets it with targetingKey as
                           userId. "on" is null where the client cannot tell
                           (OFREP, a flag with variants).
"""

import json
import sys
import tempfile
import time

mode, base_url, key = sys.argv[1:4]

if mode == "ofrep":
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    api.set_provider(
        OFREPProvider(base_url, headers_factory=lambda: {"Authorization": f"Bearer {key}"})
    )
    client = api.get_client()

    def on(flag, user):
        return client.get_boolean_value(flag, False, EvaluationContext(targeting_key=user))

    def evaluate(flag, context, variants):
        attributes = dict(context)
        key = attributes.pop("targetingKey", None)
        evaluation_context = EvaluationContext(targeting_key=key, attributes=attributes)
        if variants:
            details = client.get_string_details(flag, "", evaluation_context)
            variant = details.value if details.error_code is None and details.value else None
            on = None
        else:
            details = client.get_boolean_details(flag, False, evaluation_context)
            variant = None
            on = details.value if details.error_code is None else None
        error = details.error_code.value if details.error_code is not None else None
        return {"on": on, "variant": variant, "error": error}

elif mode == "unleash":
    from UnleashClient import UnleashClient

    client = UnleashClient(
        url=f"{base_url}/api",
        app_name="baton-test",
        custom_headers={"Authorization": key},
        refresh_interval=1,
        metrics_interval=1,
        cache_directory=tempfile.mkdtemp(prefix="unleash-cache-"),
    )
    client.initialize_client()

    def on(flag, user):
        return client.is_enabled(flag, {"userId": user})

    def evaluate(flag, context, variants):
        unleash_context = dict(context)
        if "targetingKey" in unleash_context:
            unleash_context["userId"] = unleash_context.pop("targetingKey")
        variant = client.get_variant(flag, unleash_context)
        return {
            "on": variant["feature_enabled"],
            "variant": variant["name"] if variant["enabled"] else None,
            "error": None,
        }

else:
    sys.exit(f"unknown mode {mode}")

print(json.dumps({"ready": mode}), flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "on":
        answer = {"on": on(words[1], words[2])}
    elif words[0] == "who":
        answer = {"users": [f"user-{i}" for i in range(int(words[2])) if on(words[1], f"user-{i}")]}
    elif words[0] == "eval":
        _, flag, kind, rest = line.split(" ", 3)
        answer = evaluate(flag, json.loads(rest), kind == "variants")
    elif words[0] == "wait":
        flag, user, want, within = words[1], words[2], words[3] == "true", float(words[4])
        start = time.monotonic()
        now = on(flag, user)
        while now != want and time.monotonic() - start < within:
            time.sleep(0.05)
            now = on(flag, user)
        answer = {"on": now, "seconds": time.monotonic() - start}
    else:
        answer = {"error": f"unknown command {words[0]}"}
    print(json.dumps(answer), flush=True)
if mode == "unleash":
    client.destroy()

"""The payload of an instance: what re-provisions it (schema ``payload``).

The agent writes it as ``zones/<uuid>/instance.json`` when it provisions; the
restore-data puller writes the same document as ``vm-<uuid>.json`` so another
headnode can provision the instance again. One builder keeps the two equal.
"""

from sdcadm.schemas import validate


def make_payload(instance, image, env=None):
    """The payload document (schema ``payload``) for an instance and its image
    (an Image, or the image document of an earlier payload)."""
    doc = {"instance": instance.to_dict(),
           "image": image if isinstance(image, dict) else image.to_dict()}
    if env:
        doc["env"] = dict(env)
    return validate("payload", doc, f"payload of instance {instance.uuid}")


def payload_env(instance):
    """Extra environment from the instance's ``params.env`` (strings only)."""
    env = instance.params.get("env") if isinstance(instance.params, dict) else None
    if not isinstance(env, dict):
        return {}
    return {str(k): v for k, v in env.items() if isinstance(v, str)}

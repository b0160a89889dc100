"""What a request asks of host trust: flavor extra specs and image traits.

A request needs trust when any of these is present:

* flavor extra specs in the ``trust:`` namespace:

  ``trust:trusted_host=required``
      the host must hold a fresh, signed, trusted verdict;
  ``trust:min_level=<1-4>``
      ... at this level of assurance or higher (implies ``required``);
  ``trust:max_age=<seconds>``
      ... received at most this long ago (implies ``required``); it can
      only tighten the operator's ``[trusted_pools_scheduler] max_age``.

  There is no ``forbidden``: a filter can only vouch for the presence of
  fresh evidence, and routing on its absence would let an unknown or
  tampered host count as the "right" kind of host.

* the Placement traits of the ISecL pattern, required by the flavor
  (``trait:CUSTOM_TRUSTED_POOLS_TRUSTED=required``,
  ``trait:CUSTOM_TRUSTED_POOLS_LOA_<n>=required``) or by the image
  (the same names as image properties). Nova keeps only the image
  properties its ``ImageMetaProps`` object knows, and the one way an image
  property reaches a scheduler filter is ``trait:<NAME>=required``
  (``ImageMetaProps.traits_required``): that is the image convention here,
  and ad-hoc properties such as ``trust_trusted_host`` would be silently
  dropped by Nova before the filter sees them. Placement prefilters on the
  traits; this filter stays the freshness check.

Nova-api rejects bad ``trust:`` values at flavor creation through the
validators of :func:`register` (entry point ``nova.api.extra_spec_validators``).
Flavors created before that (or with an API microversion below 2.86) may
still carry a bad value: :func:`requirement_from_specs` then returns an
unsatisfiable requirement, so no host passes (fail closed).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

from trusted_pools.protocol.levels import AssuranceLevel

__all__ = [
    "NAMESPACE", "TRUSTED_HOST", "MIN_LEVEL", "MAX_AGE", "MAX_AGE_LIMIT",
    "TRAIT_TRUSTED", "TRAIT_LOA_PREFIX", "trait_for_level",
    "TrustRequirement", "requirement_from_specs", "register",
]

NAMESPACE = "trust"
TRUSTED_HOST = "trust:trusted_host"
MIN_LEVEL = "trust:min_level"
MAX_AGE = "trust:max_age"
#: Longest trust:max_age accepted, seconds (one day).
MAX_AGE_LIMIT = 86400

#: Trait kept on the resource provider of every trusted compute node.
TRAIT_TRUSTED = "CUSTOM_TRUSTED_POOLS_TRUSTED"
#: Prefix of the per-level traits: CUSTOM_TRUSTED_POOLS_LOA_1 .. _4.
TRAIT_LOA_PREFIX = "CUSTOM_TRUSTED_POOLS_LOA_"
_TRAIT_LOA = re.compile(re.escape(TRAIT_LOA_PREFIX) + r"([1-4])")

_LEVELS = range(int(AssuranceLevel.IDENTITY), int(AssuranceLevel.RUNTIME) + 1)


def trait_for_level(level: int) -> str:
    """Placement trait name for a level of assurance (1 to 4)."""
    if type(level) is bool or int(level) not in _LEVELS:
        raise ValueError("level must be 1 to 4")
    return "%s%d" % (TRAIT_LOA_PREFIX, int(level))


@dataclasses.dataclass(frozen=True)
class TrustRequirement:
    """What one request needs of a host.

    ``max_age`` is None when the request leaves freshness to the operator's
    default. ``invalid`` holds why the request's trust specs are unusable;
    such a requirement is satisfied by no host.
    """

    min_level: int
    max_age: int | None = None
    invalid: str | None = None
    source: str = ""

    def describe(self) -> str:
        text = "level >= %d" % self.min_level
        if self.max_age is not None:
            text += ", max_age %d s" % self.max_age
        return "%s (from %s)" % (text, self.source or "defaults")


def _parse_int(name: str, value: Any, low: int, high: int) -> int:
    """Integer as nova-api's validator accepts it, or ValueError."""
    if isinstance(value, bool):
        raise ValueError("%s=%r is not an integer" % (name, value))
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError("%s=%r is not an integer" % (name, value)) from None
    if not low <= number <= high:
        raise ValueError("%s=%d is outside %d..%d" % (name, number, low,
                                                        high))
    return number


def _trait_levels(traits: Iterable[str]) -> tuple[bool, int]:
    """(asks for trust, highest level asked) from required trait names."""
    wanted, level = False, 0
    for trait in traits:
        if trait == TRAIT_TRUSTED:
            wanted = True
            continue
        match = _TRAIT_LOA.fullmatch(trait) if isinstance(trait,
                                                          str) else None
        if match:
            wanted, level = True, max(level, int(match.group(1)))
    return wanted, level


def _flavor_traits(extra_specs: Mapping[str, Any]) -> list[str]:
    return [key[6:] for key, value in extra_specs.items()
            if isinstance(key, str) and key.startswith("trait:")
            and value == "required"]


def requirement_from_specs(extra_specs: Mapping[str, Any] | None,
                           image_traits: Iterable[str] | None = None,
                           default_min_level: int = 1
                           ) -> TrustRequirement | None:
    """The trust a request needs, or None when it asks for none.

    ``extra_specs`` is the flavor's; ``image_traits`` the image's
    ``traits_required``. Never raises on bad values: see the module doc.
    """
    specs = extra_specs or {}
    sources = []
    level, max_age, invalid = 0, None, None
    wanted = False
    trust_keys = [k for k in specs
                  if isinstance(k, str) and k.startswith(NAMESPACE + ":")]
    if trust_keys:
        wanted = True
        sources.append("flavor trust: extra specs")
    for key in trust_keys:
        value = specs[key]
        try:
            if key == TRUSTED_HOST:
                if value != "required":
                    raise ValueError("%s=%r: the only value is 'required'"
                                     % (key, value))
            elif key == MIN_LEVEL:
                level = max(level, _parse_int(key, value, 1, 4))
            elif key == MAX_AGE:
                max_age = _parse_int(key, value, 1, MAX_AGE_LIMIT)
            else:
                raise ValueError("%s is not a known trust extra spec" % key)
        except ValueError as error:
            invalid = invalid or str(error)
    for origin, traits in (("flavor traits", _flavor_traits(specs)),
                           ("image traits", image_traits or ())):
        asks, trait_level = _trait_levels(traits)
        if asks:
            wanted = True
            level = max(level, trait_level)
            sources.append(origin)
    if not wanted:
        return None
    return TrustRequirement(min_level=max(level, default_min_level, 1),
                            max_age=max_age, invalid=invalid,
                            source=" and ".join(sources))


# --- nova-api validators ----------------------------------------------------

_DESCRIPTIONS = {
    TRUSTED_HOST: ("Schedule only on a host holding a fresh verdict of the "
                   "trusted_pools conductor that says 'trusted'."),
    MIN_LEVEL: ("Lowest level of assurance of the host: 1 TPM identity, 2 "
                "platform firmware, 3 OS boot, 4 runtime (IMA). Implies "
                "trust:trusted_host=required."),
    MAX_AGE: ("Seconds since the scheduler received the host's verdict, at "
              "most; tightens [trusted_pools_scheduler] max_age. Implies "
              "trust:trusted_host=required."),
}


def register() -> list[Any]:
    """Validators for nova-api (entry point ``nova.api.extra_spec_validators``).

    Registering the ``trust`` namespace also makes nova-api refuse unknown
    ``trust:*`` keys, so a typo cannot silently drop a requirement.
    """
    from nova.api.validation.extra_specs import base

    return [
        base.ExtraSpecValidator(
            name=TRUSTED_HOST, description=_DESCRIPTIONS[TRUSTED_HOST],
            value={"type": str, "enum": ["required"],
                   "description": "Only 'required'."}),
        base.ExtraSpecValidator(
            name=MIN_LEVEL, description=_DESCRIPTIONS[MIN_LEVEL],
            value={"type": int, "min": 1, "max": 4,
                   "description": "Level of assurance, 1 to 4."}),
        base.ExtraSpecValidator(
            name=MAX_AGE, description=_DESCRIPTIONS[MAX_AGE],
            value={"type": int, "min": 1, "max": MAX_AGE_LIMIT,
                   "description": "Seconds, 1 to %d." % MAX_AGE_LIMIT}),
    ]

"""ICD-10-CM codes, checked against the code list shipped in `simple-icd-10-cm` (offline)."""

from __future__ import annotations

import simple_icd_10_cm as cm

from clinic_platform.errors import InvalidArgument


def checked(code: str, field: str = "diagnosis.code") -> tuple[str, str]:
    """(the code in its dotted form, its title); INVALID_ARGUMENT naming `field` when unknown."""
    wanted = code.strip().upper()
    if not wanted:
        raise InvalidArgument(field, "is required: an ICD-10-CM code such as J45.909")
    if not cm.is_valid_item(wanted):
        raise InvalidArgument(field, "is not a code of the ICD-10-CM code list")
    if cm.is_chapter_or_block(wanted):
        raise InvalidArgument(field, "names a chapter or block of ICD-10-CM, not a diagnosis code")
    dotted = cm.add_dot(wanted) if "." not in wanted and len(wanted) > 3 else wanted
    return dotted, cm.get_description(dotted)


def title(code: str) -> str:
    try:
        return cm.get_description(code)
    except ValueError:
        return ""

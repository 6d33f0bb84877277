"""What the Label Studio backend reads from Label Studio: the labeling config's control and
each task's image (its uploads with its token, its local-files storage, or a path here)."""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError

CONTROLS = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels"}


@dataclass
class LabelingConfig:
    """What a project's labeling config asks of the model.

    Attributes:
        kind: ``brushlabels`` or ``polygonlabels``.
        from_name: the control tag's name; to_name: the image tag it labels.
        labels: the control's label values.
    """

    kind: str
    from_name: str
    to_name: str
    labels: list[str] = field(default_factory=list)


def parse_label_config(xml: str) -> LabelingConfig:
    """The first brush or polygon control of a Label Studio labeling config."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise SegkitError(f"the project's labeling config is not XML ({err})") from None
    for element in root.iter():
        if element.tag in CONTROLS:
            return LabelingConfig(CONTROLS[element.tag], element.get("name", "label"),
                                  element.get("toName", "image"),
                                  [label.get("value", "") for label in element.iter("Label")])
    raise SegkitError("the project's labeling config has no BrushLabels or PolygonLabels: a "
                      "segmentation backend answers with masks or polygons")


def image_bytes(url: str, ls_url: str = "", ls_key: str = "", local_root: str = "") -> bytes:
    """The bytes of a task's image: Label Studio's uploads and URLs (with its token), its
    local-files storage, or a path here."""
    if url.startswith("data:"):  # an inline image
        return base64.b64decode(url.split(",", 1)[1])
    if "/data/local-files/" in url and local_root:
        relative = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("d", [""])[0]
        return (Path(local_root) / relative).read_bytes()
    if url.startswith("/") and ls_url and not Path(url).is_file():
        url = ls_url.rstrip("/") + url
    if url.startswith(("http://", "https://")):
        request = urllib.request.Request(url)
        if ls_key and ls_url and url.startswith(ls_url.rstrip("/")):
            request.add_header("Authorization", f"Token {ls_key}")
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - http(s) only
            return bytes(answer.read())
    return Path(url.removeprefix("file://")).read_bytes()


def task_image_url(task: dict[str, Any], to_name: str) -> str:
    """The URL of the image a task's ``to_name`` tag shows (its data key, else the first)."""
    data = task.get("data") or {}
    value = data.get(to_name) or data.get("image") or next(iter(data.values()), "")
    if not isinstance(value, str) or not value:
        raise SegkitError(f"task {task.get('id')}: no image URL in its data")
    return value

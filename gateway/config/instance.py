"""Which gateway instance this is, among several behind one load balancer: the ``Instance`` section."""

from __future__ import annotations

import re

from gateway.config.binder import Binder
from gateway.config.problems import Section
from gateway.config.settings import InstanceSettings

#: What an instance id may be: it starts every SignalR connection token, which clients put in a URL
#: without escaping and a load balancer matches up to the first ``.``; so no dots, nothing to escape.
_INSTANCE_ID = re.compile(r"[A-Za-z0-9-]{1,32}", re.ASCII)


def bind_instance(binder: Binder, section: Section | None) -> InstanceSettings:
    if section is None:
        return InstanceSettings()
    path = section.child_path("Id")
    value = binder.string(path, section.take("Id"))
    instance_id = ""
    if value is not None:
        if _INSTANCE_ID.fullmatch(value):
            instance_id = value
        else:
            binder.problem(path, f"must be 1 to 32 letters, digits or '-' (e.g. \"gw1\"), got {value!r}; it starts "
                           "every SignalR connection token, so the load balancer can send each hub request to the "
                           "instance that holds its connection", value)
    binder.warn_unknown(section)
    return InstanceSettings(id=instance_id)

"""The settings groups each Lambda function's code path can reach, read from the code (not declared).

A function runs one handler: the API runs every route (through the product's ``Router``), a queue
or schedule function runs its one handler. The handler's body, and every function of ours it names
(called or passed on, in any module under functions/), is scanned for ``container().member`` and
``backups().member``; each member of the installed container, and every member it names on
``self``, for the settings groups it reads (``self.settings.push``, ``settings.portainer`` after
``settings = self.settings``, or a helper given ``self.settings`` such as ``redis_client``).
Whatever the scan cannot follow (the settings or a container handed on some other way) fails it,
so the answer errs on the side of more secrets, never fewer.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

from chalice.app import Chalice

from cdk.product import API_FUNCTION
from functions.platform import http

# The Settings methods that read a group.
GROUP_OF_METHOD = {"database_url_for": "database", "require_edge": "edge"}
# The calls that hand out a product's (or the backups') installed container.
CONTAINER_GETTERS = {"container", "backups"}


class CannotFollow(AssertionError):
    pass


def group_name(attribute: str) -> str:
    return GROUP_OF_METHOD.get(attribute, attribute)


@functools.cache
def parsed(function: Callable[..., Any]) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def _ours(value: object) -> Callable[..., Any] | None:
    """A plain function defined under functions/, else None."""
    if isinstance(value, types.FunctionType) and value.__module__.startswith("functions."):
        return value
    return None


def installed_class(getter: Callable[[], Any]) -> type:
    """The container class an ``Installed(...).get`` builds (``container``, ``backups``)."""
    installed = getattr(getter, "__self__", None)
    build = getattr(installed, "_build", None)
    if not isinstance(build, type):
        raise CannotFollow(f"{getter!r} is not an installed container's getter")
    return build


def containers_reached(handler: Callable[..., Any]) -> Iterator[tuple[type, str]]:
    """(container class, member) for every ``container().member`` the handler's code can reach."""
    seen: set[Callable[..., Any]] = set()
    pending = [handler]
    while pending:
        function = inspect.unwrap(pending.pop())  # a schedule's own code, not its trace wrapper
        if function in seen:
            continue
        seen.add(function)
        for node in ast.walk(parsed(function)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CONTAINER_GETTERS:
                getter = function.__globals__.get(node.func.id)
                parent = _parent_attribute(parsed(function), node)
                if getter is None or parent is None:
                    raise CannotFollow(f"{function.__qualname__}: a {node.func.id}() not followed by .member")
                yield installed_class(getter), parent
            elif isinstance(node, ast.Name) and (named := _ours(function.__globals__.get(node.id))) is not None:
                pending.append(named)


def _parent_attribute(tree: ast.AST, call: ast.Call) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.value is call:
            return node.attr
    return None


def _member_function(cls: type, member: str) -> Callable[..., Any] | None:
    """The function behind a class's member (a method, a cached_property, a property), else None."""
    for owner in cls.__mro__:
        if member in owner.__dict__:
            value = owner.__dict__[member]
            if isinstance(value, functools.cached_property):
                return value.func
            if isinstance(value, property):
                return value.fget
            return value if isinstance(value, types.FunctionType) else None
    return None


def groups_of_member(cls: type, member: str) -> set[str]:
    """The settings groups a container member reads, itself or through the members it names."""
    if member == "settings":
        raise CannotFollow(f"{cls.__name__}.settings handed out whole: which groups are read is unknown")
    groups: set[str] = set()
    seen: set[str] = set()
    pending = [member]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        function = _member_function(cls, name)
        if function is None:
            continue  # a plain attribute (database_name)
        tree = parsed(function)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_self(node.value) and node.attr != "settings":
                pending.append(node.attr)
        groups |= _groups_read(function, tree)
    return groups


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_settings(node: ast.AST) -> bool:
    """``self.settings``, or a local ``settings`` (``settings = self.settings``)."""
    if isinstance(node, ast.Name):
        return node.id == "settings"
    return isinstance(node, ast.Attribute) and node.attr == "settings" and _is_self(node.value)


def _groups_read(function: Callable[..., Any], tree: ast.AST) -> set[str]:
    groups: set[str] = set()
    followed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_settings(node.value):
            groups.add(group_name(node.attr))
            followed.add(id(node.value))
        elif isinstance(node, ast.Call):
            handed = [arg for arg in node.args if _is_settings(arg)]
            if not handed:
                continue
            helper = _ours(function.__globals__.get(node.func.id)) if isinstance(node.func, ast.Name) else None
            if helper is None:
                raise CannotFollow(f"{function.__qualname__} hands the settings to {ast.unparse(node.func)}")
            groups |= {group_name(name) for name in re.findall(r"\bsettings\.([a-z_]+)", inspect.getsource(helper))}
            followed.update(id(arg) for arg in handed)
        elif isinstance(node, ast.Assign) and _is_settings(node.value) and isinstance(node.value, ast.Attribute):
            followed.add(id(node.value))  # ``settings = self.settings``: its uses are the attributes above
    unfollowed = [
        node
        for node in ast.walk(tree)
        if _is_settings(node) and isinstance(node, ast.Attribute) and id(node) not in followed
    ]
    if unfollowed:
        raise CannotFollow(f"{function.__qualname__} uses the settings in a way the scan cannot follow")
    return groups


def router_groups_and_members() -> tuple[set[str], set[str]]:
    """What the platform's HTTP layer reads itself on every request: settings groups, container members."""
    source = inspect.getsource(http)
    groups = {group_name(name) for name in re.findall(r"\bsettings\.([a-z_]+)", source)}
    members = set(re.findall(r"\bruntime\.([a-z_]+)", source)) - {"settings"}
    return groups, members


def groups_by_function(app: Chalice, routers: list[http.Router]) -> dict[str, set[str]]:
    """Each Lambda function of a Chalice app (by its handler's name) → the settings groups it can reach."""
    handlers: dict[str, list[Callable[..., Any]]] = {}
    for source in app.event_sources:
        module, _, name = source.handler_string.rpartition(".")
        registered = getattr(importlib.import_module(module), name)
        handlers[source.name] = [getattr(registered, "func", registered)]  # Chalice's EventSourceHandler wraps it
    handlers[API_FUNCTION] = [operation.handler for router in routers for operation in router.operations]
    http_groups, http_members = router_groups_and_members()
    result: dict[str, set[str]] = {}
    for function, entry_points in handlers.items():
        groups: set[str] = set()
        for handler in entry_points:
            for cls, member in containers_reached(handler):
                groups |= groups_of_member(cls, member)
        if function == API_FUNCTION:
            groups |= http_groups
            for router in routers:
                groups |= {g for m in http_members for g in groups_of_member(installed_class(router._runtime), m)}
        result[function] = groups
    return result

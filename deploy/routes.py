#!/usr/bin/env python3
"""Checks the routing table (deploy/routes.json) the way an AWS Application Load Balancer
reads it: for every route each service serves, the first matching rule (lowest priority
number first; patterns case-sensitive, '*' any run of characters, '?' one character, the path
alone) must send it to the service that serves it. Also checks what the ALB itself refuses:
at most five path values per rule, unique priorities, known services, a health check each.

Usage: deploy/routes.py [ROUTES_JSON]   (exit status 0 when every check holds)
       deploy/routes.py served   (every route of every service, "PATH SERVICE" a line)
       deploy/routes.py haproxy LISTEN HOST=ADDRESS... [--interval SECONDS]
         writes a haproxy configuration that routes as the table says, to stdout: the rules
         in priority order as anchored, case-sensitive path regexes, each service a backend
         health-checked on its path, a target taken out of rotation after two failed checks
         (deploy/local runs it; LISTEN such as 127.0.0.1:18000, HOST such as mcp=127.0.1.1)
"""
import json
import re
import sys
from pathlib import Path

# Every route of every service, as a request path an example of it would use, and the service
# that serves it. A route added to a service belongs here too.
SERVED = [
    # isa-mcp serve: MCP and its side routes (port 8081)
    ("/mcp", "mcp"), ("/mcp/", "mcp"), ("/mcp/health", "mcp"), ("/discover", "mcp"),
    ("/search", "mcp"), ("/stats", "mcp"), ("/capabilities", "mcp"),
    ("/.well-known/oauth-protected-resource", "mcp"),
    ("/.well-known/oauth-protected-resource/mcp", "mcp"),
    # the user service (8100)
    ("/api/users/me", "users"), ("/api/users/me/api-keys", "users"),
    ("/api/users/me/api-keys/key-1", "users"), ("/api/users/alice/files", "users"),
    ("/api/users/alice/files/f-1", "users"), ("/api/users/alice/files/uploads", "users"),
    ("/api/users/alice/files/f-1/complete", "users"), ("/api/users/alice/credits", "users"),
    ("/api/users/alice/credits/consume", "users"), ("/api/users/alice/credits/grant", "users"),
    ("/api/users/alice/credits/history", "users"), ("/api/users/alice/usage", "users"),
    ("/api/auth/verify", "users"), ("/api/users/openapi.json", "users"),
    ("/files/users/alice/files/2026/12/f-1-notes.txt", "users"),
    # the event service (8101)
    ("/api/events", "events"), ("/api/events/recent", "events"), ("/api/events/counts", "events"),
    ("/api/events/openapi.json", "events"),
    # the model service (8082)
    ("/api/v1/chat/completions", "model"), ("/api/v1/messages", "model"),
    ("/api/v1/embeddings", "model"), ("/api/v1/images/generations", "model"),
    ("/api/v1/models", "model"), ("/api/v1/health", "model"), ("/docs", "model"),
    ("/docs/", "model"), ("/docs/index.html", "model"), ("/openapi.json", "model"),
    # the agent service (8080), also the default
    ("/api/chat", "agent"), ("/api/chat/sessions", "agent"), ("/api/chat/sessions/s-1", "agent"),
    ("/api/agents", "agent"), ("/api/agent/test-mcp", "agent"), ("/api/agent/health", "agent"),
    ("/health", "agent"), ("/", "agent"),
    # never through the balancer
    ("/metrics", "blocked"),
]

# Paths that look alike but are not the rule's: the balancer matches case and whole paths.
NOT = [("/MCP", "agent"), ("/mcpx", "agent"), ("/api/V1/models", "agent"),
       ("/api/eventsx", "agent"), ("/api/usersx", "agent")]


def matches(pattern: str, path: str) -> bool:
    """An ALB path pattern: case-sensitive, '*' any run, '?' one character, whole path."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


def route(table: dict, path: str) -> str:
    blocked = table.get("blocked")
    rules = sorted(table["rules"], key=lambda r: r["priority"])
    if blocked:
        rules = [{"priority": blocked["priority"], "service": "blocked", "paths": blocked["paths"]}] + rules
    for rule in sorted(rules, key=lambda r: r["priority"]):
        if any(matches(p, path) for p in rule["paths"]):
            return rule["service"]
    return table["default"]


def check(table: dict) -> list:
    problems = []
    services = table["services"]
    priorities = [r["priority"] for r in table["rules"]] + [table.get("blocked", {}).get("priority")]
    if len(set(priorities)) != len(priorities):
        problems.append(f"priorities repeat: {priorities}")
    for rule in table["rules"]:
        if rule["service"] not in services:
            problems.append(f"rule {rule['priority']} names an unknown service {rule['service']}")
        if not 1 <= len(rule["paths"]) <= 5:
            problems.append(f"rule {rule['priority']} has {len(rule['paths'])} paths; the ALB takes 1 to 5")
    if table["default"] not in services:
        problems.append(f"the default {table['default']} is not a service")
    for name, service in services.items():
        if not service.get("health_check", "").startswith("/"):
            problems.append(f"{name} has no health check path")
    for path, expected in SERVED + NOT:
        got = route(table, path)
        if got != expected:
            problems.append(f"{path} goes to {got}, not {expected}")
    return problems


def regex(pattern: str) -> str:
    """An ALB path pattern as an anchored regex (haproxy's path_reg)."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return f"^{body}$"


def haproxy(table: dict, listen: str, hosts: dict, interval: float) -> str:
    lines = [
        "# Generated by deploy/routes.py from deploy/routes.json; do not edit.",
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 300s",
        "    timeout server 300s",
        "    timeout http-request 30s",
        "frontend isa",
        f"    bind {listen}",
    ]
    blocked = table.get("blocked")
    if blocked:
        lines.append(f"    acl blocked path_reg {' '.join(regex(p) for p in blocked['paths'])}")
        body = '{"error":{"code":"not_found","message":"no such route"}}'
        lines.append(f"    http-request return status 404 content-type application/json string '{body}' if blocked")
    for rule in sorted(table["rules"], key=lambda r: r["priority"]):
        name = f"rule_{rule['priority']}"
        lines.append(f"    acl {name} path_reg {' '.join(regex(p) for p in rule['paths'])}")
        lines.append(f"    use_backend {rule['service']} if {name}")
    lines.append(f"    default_backend {table['default']}")
    for name, service in table["services"].items():
        address = hosts[service["host"]]
        lines += [
            f"backend {name}",
            # As the ALB does: HTTP/1.1 with the target's own address as Host.
            "    option httpchk",
            f"    http-check send meth GET uri {service['health_check']} ver HTTP/1.1 hdr Host {address}:{service['port']}",
            "    http-check expect status 200",
            f"    server {name} {address}:{service['port']} check inter {int(interval * 1000)} fall 2 rise 2",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "served":
        for path, service in SERVED:
            print(path, service)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "haproxy":
        table = json.loads(Path(__file__).with_name("routes.json").read_text())
        args = sys.argv[2:]
        interval = 10.0
        if "--interval" in args:
            i = args.index("--interval")
            interval = float(args[i + 1])
            del args[i:i + 2]
        listen, hosts = args[0], dict(a.split("=", 1) for a in args[1:])
        sys.stdout.write(haproxy(table, listen, hosts, interval))
        return 0
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("routes.json")
    table = json.loads(path.read_text())
    problems = check(table)
    for problem in problems:
        print(f"routes: {problem}", file=sys.stderr)
    if not problems:
        print(f"routes: {len(SERVED) + len(NOT)} paths go where they should through {len(table['rules'])} rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

# A private Python package index: pypiserver in an Alpine image, accounts in htpasswd.
# `make run` does everything; `make help` lists the targets. Every value can be overridden:
#   make run PORT=9090 PYPI_AUTHENTICATE=update,download,list
DOCKER ?= docker
IMAGE ?= pypibox/server:latest
AUTH_IMAGE ?= pypibox/auth:latest
CONTAINER ?= pypi
VOLUME ?= pypi
AUTH_VOLUME ?= pypi-auth
PORT ?= 8080
BIND ?= 127.0.0.1
WAIT ?= 60
BUILD_ARGS ?=
PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
BACKUP ?= pypi-backup.tar.gz
PYPI_UID ?= 9898
DURATION ?= 120
# Server settings passed to the container by `make run` when set (README lists them all).
RUN_VARS = PYPI_AUTHENTICATE PYPI_OVERWRITE PYPI_FALLBACK PYPI_FALLBACK_URL PYPI_WORKERS \
	PYPI_THREADS PYPI_MAX_UPLOAD_SIZE PYPI_MAX_UPLOADS PYPI_MAX_CONNECTIONS PYPI_HEADER_TIMEOUT \
	PYPI_KEEPALIVE_TIMEOUT PYPI_BODY_TIMEOUT PYPI_AUTH_RATE PYPI_LOG_LEVEL $(CACHE_VARS)
# The cache of the public index (PYPI_FALLBACK=cache); credentials go in a netrc file in the
# accounts volume (PYPI_UPSTREAM_NETRC=/data/auth/netrc), never on this command line.
CACHE_VARS = PYPI_UPSTREAM PYPI_UPSTREAM_NETRC PYPI_UPSTREAM_TTL PYPI_UPSTREAM_TIMEOUT \
	PYPI_UPSTREAM_MIN_AGE PYPI_UPSTREAM_MIN_AGE_EXEMPT PYPI_UPSTREAM_OFFLINE PYPI_CACHE_MAX_SIZE
RUN_ENV = $(foreach v,$(RUN_VARS),$(if $(filter-out undefined,$(origin $(v))),-e $(v)=$($(v))))
# `make dev` defaults: the same entrypoint on the host, data under ./data, accounts in auth/.
PYPI_HOST ?= 127.0.0.1
PYPI_PORT ?= $(PORT)
PYPI_PACKAGES_DIR ?= $(CURDIR)/data/packages
PYPI_HTPASSWD ?= $(CURDIR)/auth/htpasswd
DEV_VARS = PYPI_HOST PYPI_PORT PYPI_PACKAGES_DIR PYPI_HTPASSWD PYPI_ROLES PYPI_TOKENS \
	PYPI_BCRYPT_COST $(RUN_VARS)
DEV_ENV = $(foreach v,$(DEV_VARS),$(if $(filter-out undefined,$(origin $(v))),$(v)='$($(v))'))
PYPI_ROLES ?= $(CURDIR)/auth/roles
PYPI_TOKENS ?= $(CURDIR)/auth/tokens
HAVE_DOCKER = $(shell command -v $(DOCKER) 2>/dev/null)
NEED_DOCKER = $(if $(HAVE_DOCKER),,$(error '$@' needs Docker ($(DOCKER) not found on PATH); 'make dev' runs without it))

# Team commands: `python -m pypibox ...` beside the server (scripts/in-container.sh), recorded
# in the audit trail as cli:$(BY) (default: your login name).
BY ?= $(shell id -un 2>/dev/null)
IN_CONTAINER = DOCKER='$(DOCKER)' IMAGE=$(IMAGE) CONTAINER=$(CONTAINER) VOLUME=$(VOLUME) \
	AUTH_VOLUME=$(AUTH_VOLUME) sh scripts/in-container.sh
WHAT = $(or $(FILE),$(VERSION))
NEED_PROJECT = $(if $(PROJECT),,$(error give the project: make $@ PROJECT=<name>))
NEED_WHAT = $(if $(WHAT),,$(error give the version or the file: make $@ PROJECT=$(PROJECT) VERSION=<version> (or FILE=<file name>)))
NEED_MEMBER = $(if $(filter command line,$(origin USER)),,$(error give the user: make $@ PROJECT=$(or $(PROJECT),<name>) USER=<name> [REMOVE=yes]))

.PHONY: help build volumes accounts run stop logs status clean clean-volumes dev venv \
	test test-env lint lock backup restore soak bench yank unyank delete status-project \
	owner maintainer audit cache-stats cache-prune cache-forget

help: ## List the targets
	@echo "make <target>   (index at http://localhost:$(PORT)/ after 'make run')"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## Build the server and auth images
	$(NEED_DOCKER)
	$(DOCKER) build -t $(IMAGE) $(BUILD_ARGS) .
	$(MAKE) -C auth build DOCKER='$(DOCKER)' AUTH_IMAGE=$(AUTH_IMAGE)

volumes: ## Create the volumes pypi (packages) and pypi-auth (accounts)
	$(NEED_DOCKER)
	$(DOCKER) volume create $(VOLUME) >/dev/null
	$(DOCKER) volume create $(AUTH_VOLUME) >/dev/null

accounts: ## Check auth/htpasswd and put it into the pypi-auth volume
	$(MAKE) -C auth install DOCKER='$(DOCKER)' AUTH_IMAGE=$(AUTH_IMAGE) AUTH_VOLUME=$(AUTH_VOLUME)

run: build volumes accounts ## Build, create volumes, install accounts, start, wait until healthy
	@DOCKER='$(DOCKER)' IMAGE=$(IMAGE) CONTAINER=$(CONTAINER) VOLUME=$(VOLUME) \
	AUTH_VOLUME=$(AUTH_VOLUME) PORT=$(PORT) BIND=$(BIND) WAIT=$(WAIT) \
	sh scripts/start-container.sh $(RUN_ENV)

stop: ## Stop the server container (packages and accounts are kept)
	$(NEED_DOCKER)
	@if $(DOCKER) inspect $(CONTAINER) >/dev/null 2>&1; then $(DOCKER) stop $(CONTAINER); \
	else echo "No container named $(CONTAINER); nothing to stop."; fi

logs: ## Show the server's log (FOLLOW=1 to follow)
	$(NEED_DOCKER)
	$(DOCKER) logs --tail 200 $(if $(FOLLOW),--follow) $(CONTAINER)

status: ## Show the container, its health and the volumes
	$(NEED_DOCKER)
	@$(DOCKER) ps -a --filter name=^/$(CONTAINER)$$ --format 'container {{.Names}}: {{.Status}} {{.Ports}}' | grep . \
		|| echo "container $(CONTAINER): not created (make run)"
	@$(DOCKER) volume ls --format '{{.Name}}' | grep -x -e $(VOLUME) -e $(AUTH_VOLUME) | sed 's/^/volume: /' \
		|| echo "volumes: none yet"

clean: ## Remove the container and the images (never the volumes)
	$(NEED_DOCKER)
	-$(DOCKER) rm -f $(CONTAINER)
	-$(DOCKER) rmi $(IMAGE) $(AUTH_IMAGE)
	@echo "Volumes $(VOLUME) and $(AUTH_VOLUME) are kept; 'make clean-volumes CONFIRM=yes' deletes them."

clean-volumes: ## Delete the volumes with every package and account: CONFIRM=yes
	$(NEED_DOCKER)
	@if [ "$(CONFIRM)" != yes ]; then \
		echo "This deletes every package in volume $(VOLUME) and the accounts in $(AUTH_VOLUME)."; \
		echo "Run 'make clean-volumes CONFIRM=yes' to do it."; exit 1; fi
	-$(DOCKER) rm -f $(CONTAINER)
	$(DOCKER) volume rm $(VOLUME) $(AUTH_VOLUME)

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --require-hashes -r requirements.lock
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed requirements-test.lock
	$(VENV)/bin/pip install --disable-pip-version-check --require-hashes -r requirements.lock -r requirements-test.lock
	touch $@

venv: $(VENV)/.installed ## A local virtual environment from requirements.lock

dev: venv ## Run the server on the host, in the foreground (no Docker)
	@mkdir -p "$(PYPI_PACKAGES_DIR)"
	@echo "Packages in $(PYPI_PACKAGES_DIR), accounts in $(PYPI_HTPASSWD); http://$(PYPI_HOST):$(PYPI_PORT)/"
	env $(DEV_ENV) PYTHONPATH=$(CURDIR) $(VENV)/bin/python -m pypibox serve

test-env: $(VENV)/.test-installed

test: test-env ## Run the whole test suite
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: test-env ## Benchmark against nginx and stock pypiserver (ARGS=...)
	$(VENV)/bin/python bench/run.py $(ARGS)

lint: test-env ## ruff, mypy (strict on pypibox/), hadolint and shellcheck
	$(VENV)/bin/ruff check pypibox tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile auth/Dockerfile
	$(VENV)/bin/shellcheck auth/*.sh scripts/*.sh .ci/run

lock: ## Recompile requirements*.lock from requirements*.in (needs uv)
	$(PYTHON) scripts/lock.py

soak: test-env ## Load test on 127.0.0.1: 32 connections for DURATION seconds (default 120)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python scripts/soak.py --duration $(DURATION)

# The cache of the public index: `python -m pypibox cache ...` beside the server
# (scripts/in-container.sh). Without a running server, MAX_SIZE or PYPI_CACHE_MAX_SIZE is
# the limit cache-prune holds to (the throwaway container has the image's defaults).
PRUNE_TO = $(or $(MAX_SIZE),$(PYPI_CACHE_MAX_SIZE))

cache-stats: ## What the cache of the public index holds (PYPI_FALLBACK=cache)
	$(NEED_DOCKER)
	@$(IN_CONTAINER) cache stats

cache-prune: ## Evict least recently used cached files down to PYPI_CACHE_MAX_SIZE (MAX_SIZE=2G)
	$(NEED_DOCKER)
	@$(IN_CONTAINER) cache prune $(if $(PRUNE_TO),--max-size '$(PRUNE_TO)')

cache-forget: ## Drop one project's page and files from the cache: PROJECT=name
	@case "$(PROJECT)" in ""|*[!A-Za-z0-9._-]*) \
		echo "Say which project: make cache-forget PROJECT=<name> (letters, digits, . _ -)" >&2; \
		exit 2;; esac
	$(NEED_DOCKER)
	@$(IN_CONTAINER) cache forget '$(PROJECT)'

backup: ## Stream the pypi volume into BACKUP (.tar.gz; the cache only with CACHE=yes)
	$(NEED_DOCKER)
	@$(DOCKER) volume inspect $(VOLUME) >/dev/null 2>&1 \
		|| { echo "No volume $(VOLUME): nothing to back up." >&2; exit 1; }
	@$(DOCKER) run --rm -v $(VOLUME):/data/packages:ro --network none --entrypoint tar \
		$(IMAGE) -czf - $(if $(filter yes,$(CACHE)),,--exclude=./.pypibox/cache) \
		-C /data/packages . >"$(BACKUP).part" \
		|| { rm -f "$(BACKUP).part"; echo "Backup failed; nothing written to $(BACKUP)." >&2; exit 1; }
	@mv -f "$(BACKUP).part" "$(BACKUP)"
	@echo "Volume $(VOLUME) saved to $(BACKUP) ($$(wc -c <"$(BACKUP)") bytes$(if \
		$(filter yes,$(CACHE)),; with the cache of the public index,; the cache of the public \
		index left out: CACHE=yes includes it))."

restore: ## Stream BACKUP into the pypi volume (refused if it has packages unless FORCE=yes)
	$(NEED_DOCKER)
	@test -f "$(BACKUP)" || { echo "No backup file $(BACKUP) (make restore BACKUP=<file>)." >&2; exit 1; }
	@gzip -t "$(BACKUP)" || { echo "$(BACKUP) is not a gzip file." >&2; exit 1; }
	@if [ -n "$$($(DOCKER) ps -q --filter name=^/$(CONTAINER)$$)" ]; then \
		echo "Container $(CONTAINER) is running: 'make stop' first, then restore." >&2; exit 1; fi
	@$(DOCKER) volume create $(VOLUME) >/dev/null
	@n=$$($(DOCKER) run --rm -v $(VOLUME):/data/packages:ro --network none --entrypoint sh \
		$(IMAGE) -c 'find /data/packages -mindepth 1 -maxdepth 1 ! -name .pypibox | wc -l') \
		|| exit 1; \
	if [ "$$n" != 0 ] && [ "$(FORCE)" != yes ]; then \
		echo "Volume $(VOLUME) already holds $$n entries; 'make restore FORCE=yes' restores over them." >&2; \
		exit 1; fi
	@$(DOCKER) run --rm -i -v $(VOLUME):/data/packages --network none --user 0 --entrypoint sh \
		$(IMAGE) -c 'tar -xzf - -C /data/packages && chown -R $(PYPI_UID):$(PYPI_UID) /data/packages' \
		<"$(BACKUP)"
	@echo "Restored $(BACKUP) into volume $(VOLUME) (owner uid $(PYPI_UID))."

yank: ## Yank a version or a file (PEP 592): PROJECT=<name> VERSION=<v>|FILE=<file> [REASON=...]
	$(NEED_DOCKER)$(NEED_PROJECT)$(NEED_WHAT)
	@$(IN_CONTAINER) yank "$(PROJECT)" "$(WHAT)" --reason "$$REASON" --as "$(BY)"

unyank: ## Take a yank back: PROJECT=<name> VERSION=<v>|FILE=<file>
	$(NEED_DOCKER)$(NEED_PROJECT)$(NEED_WHAT)
	@$(IN_CONTAINER) unyank "$(PROJECT)" "$(WHAT)" --as "$(BY)"

delete: ## Delete a version or a file for good, leaving a tombstone: PROJECT=<name> VERSION=<v>|FILE=<file>
	$(NEED_DOCKER)$(NEED_PROJECT)$(NEED_WHAT)
	@$(IN_CONTAINER) delete "$(PROJECT)" "$(WHAT)" --reason "$$REASON" --as "$(BY)"

status-project: ## Show a project, or set its status (PEP 792): PROJECT=<name> [STATUS=archived] [REASON=...]
	$(NEED_DOCKER)$(NEED_PROJECT)
	@$(IN_CONTAINER) status "$(PROJECT)" $(STATUS) $(if $(STATUS),--reason "$$REASON") --as "$(BY)"

owner: ## Add (or REMOVE=yes) an owner of a project: PROJECT=<name> USER=<name>
	$(NEED_DOCKER)$(NEED_PROJECT)$(NEED_MEMBER)
	@$(IN_CONTAINER) owner $(if $(filter yes,$(REMOVE)),remove,add) "$(PROJECT)" "$(USER)" --as "$(BY)"

maintainer: ## Add (or REMOVE=yes) a maintainer of a project: PROJECT=<name> USER=<name>
	$(NEED_DOCKER)$(NEED_PROJECT)$(NEED_MEMBER)
	@$(IN_CONTAINER) maintainer $(if $(filter yes,$(REMOVE)),remove,add) "$(PROJECT)" "$(USER)" --as "$(BY)"

audit: ## Print the audit trail: every upload, yank, delete, role and token change [PROJECT=<name>]
	$(NEED_DOCKER)
	@$(IN_CONTAINER) audit $(if $(PROJECT),"$(PROJECT)") $(if $(JSON),--json)

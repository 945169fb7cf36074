# polchain node image: slim, non-root, entrypoint `polchain` (default command: `polchain node`).
# Legacy-builder compatible: plain multi-stage build, no BuildKit features.
#
#   docker build -t polchain --build-arg TORCH_SPEC=torch==2.13.0 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .     # CPU-only torch (small)
#   docker build -t polchain .                     # torch from PyPI (on x86-64 Linux: the CUDA build, GBs)
#
# TORCH_INDEX_URL, when set, is the only index torch comes from (pip --index-url): an unreachable or
# wrong index fails the build with a message naming it, never a silent fall-back to PyPI's CUDA build.
# Optional ./wheels/ folder: wheels there are preferred by pip (a local/offline torch wheel, e.g. a CPU
# build, plus --build-arg TORCH_SPEC=torch==X.Y.Z). The folder may be empty or missing. Its files stay
# in the build stages; the final image gets only the installed packages. The build prints the torch it
# installed (e.g. "torch 2.13.0+cpu: CPU-only build").

# ---- stage 1: a virtualenv with torch and the other dependencies (cached until they change) ----------
FROM python:3.11-slim AS deps
ARG TORCH_SPEC=torch
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# `wheels*` matches ./wheels when it exists (its files land in /tmp/wheels); LICENSE is named too so
# the COPY has a source when it does not (a file that never changes: editing pyproject.toml must not
# reinstall torch).
COPY LICENSE wheels* /tmp/wheels/
RUN set -eu; \
    local_whl=$(cd /tmp/wheels && ls torch-*.whl 2>/dev/null || true); \
    echo "torch: requirement $TORCH_SPEC; local wheels: ${local_whl:-none}; index: ${TORCH_INDEX_URL:-PyPI (pip's default)}"; \
    if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" --find-links /tmp/wheels "$TORCH_SPEC" || { \
        echo "error: could not install $TORCH_SPEC from TORCH_INDEX_URL=$TORCH_INDEX_URL (unreachable, or it has no" \
             "such build); it is the only index used for torch. Fix the URL, or leave it empty and put a torch" \
             "wheel in ./wheels/ with TORCH_SPEC=torch==<its version>" >&2; exit 1; }; \
    else \
      pip install --find-links /tmp/wheels "$TORCH_SPEC"; \
    fi; \
    rm -rf /tmp/wheels; \
    python -c "import torch; v = torch.version; print('torch installed:', torch.__version__ + ':', \
'CUDA ' + v.cuda + ' build' if v.cuda else 'ROCm build' if getattr(v, 'hip', None) else 'CPU-only build')"
# numpy: the code calls Tensor.numpy() (hashing), and torch's wheels do not depend on it.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; d = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(x for x in d if not x.replace(' ', '').startswith('torch')))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt numpy \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

# ---- stage 2: the project as a wheel ---------------------------------------------------------------
FROM deps AS build
COPY . /src
RUN rm -rf /src/wheels /src/docker && pip wheel --no-deps --wheel-dir /dist /src

# ---- stage 3: the runtime image ---------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist /tmp/dist
COPY docker/stack.py /usr/local/bin/polchain-stack
RUN pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && chmod 0755 /usr/local/bin/polchain-stack \
    && python -c "import node.cli, torch; print('polchain ok; torch', torch.__version__)" \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/polchain polchain \
    && mkdir -p /data/node /data/datasets \
    && chown -R polchain:polchain /data

USER polchain
WORKDIR /home/polchain
# Every `polchain node` flag has a POLCHAIN_* variable (node/settings.py).
ENV POLCHAIN_HOST=0.0.0.0 \
    POLCHAIN_PORT=8000 \
    POLCHAIN_DATADIR=/data/node \
    POLCHAIN_DATASET_DIR=/data/datasets
VOLUME ["/data/node", "/data/datasets"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('POLCHAIN_PORT', '8000'), timeout=4)"

ENTRYPOINT ["polchain"]
CMD ["node"]

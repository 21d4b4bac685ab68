# avmon router as a Lambda container image (handler router.handler.lambda_handler).
# Build from the repository root:
#   docker build -f infra/docker/router.Dockerfile -t avmon-router .
#
# The Python 3.11 Lambda base image is Amazon Linux 2 (glibc 2.26). PyAV, NumPy, OpenCV and
# cryptography ship only manylinux_2_28 wheels at our pins, so a plain `pip install .` would try to
# compile them from source here and fail. The router never imports media code (DESIGN.md: `router`
# never imports `worker` or PyAV), so this image installs the project's dependencies minus the
# worker's media stack and the local emulator, then the project itself with --no-deps. The import
# check at the end fails the build if the router ever needs one of them.

FROM public.ecr.aws/lambda/python:3.11 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml constraints.txt README.md* ./
# Not installed here: the worker's media stack and moto (used by `avmon up` only).
RUN python3 -c "import re, tomllib; \
skip = {'av', 'numpy', 'opencv-python-headless', 'moto'}; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
name = lambda d: re.split(r'[\s\[<>=!~;@]', d, maxsplit=1)[0].lower().replace('_', '-'); \
print('\n'.join(d for d in deps if name(d) not in skip))" > router-requirements.txt \
 && cat router-requirements.txt \
 && python3 -m pip install --no-cache-dir -c constraints.txt -r router-requirements.txt --target /asset

COPY . .
# --target puts everything ahead of the runtime's bundled boto3 on sys.path (/var/task first).
# The import check runs against /asset (-P: not the sources in the working directory).
RUN python3 -m pip install --no-cache-dir --no-deps -c constraints.txt --target /asset . \
 && rm -rf /asset/bin \
 && PYTHONPATH=/asset AWS_DEFAULT_REGION=us-east-1 python3 -P -c "import router.handler"


FROM public.ecr.aws/lambda/python:3.11
COPY --from=build /asset ${LAMBDA_TASK_ROOT}
# Lambda runs the image as its own non-root user on a read-only filesystem (only /tmp writable).
CMD ["router.handler.lambda_handler"]

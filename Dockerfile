# One image for every container of the topology: the static `chat` binary
# on an empty base, run as a non-root user. The role is the command:
#
#   docker build -t chat:latest .
#   docker run --rm chat:latest --help
#   docker run --rm chat:latest broker
#
# .ci/Dockerfile.prebuilt is the same last stage, fed a binary built on the
# host (for machines that cannot pull the Go image); keep the two alike.

# Build stage: a Go toolchain compiles a static binary (pure Go: zmq4,
# msgpack and modernc SQLite need no cgo).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/chat . \
	&& mkdir /out/data

# Runtime stage: nothing but the binary and an empty /data. There is no
# shell or mkdir in scratch, so /data is an empty directory made in the
# build stage and copied with its owner: a named volume mounted there
# starts as a copy of it, writable by the non-root user.
FROM scratch
COPY --from=build /out/chat /chat
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Relative paths (the roles' default --data ./data) land on the volume too.
WORKDIR /data
ENTRYPOINT ["/chat"]

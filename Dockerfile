# One image for every container of the topology: the static `chat` binary
# on an empty base. The role is the command: `chat broker`, `chat server`...
#
# Build stage: a Go toolchain compiles a static binary (pure Go: zmq4,
# msgpack and modernc SQLite need no cgo).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/chat .

FROM scratch
COPY --from=build /out/chat /chat
# The servers write their SQLite files here (a volume in compose.yaml).
WORKDIR /data
ENTRYPOINT ["/chat"]

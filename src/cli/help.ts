/** `artificer --help`: every flag, with an example. Kept beside the parser so the two change together. */
export const HELP = `artificer — build a container image from a base image plus files, without a Docker daemon.

Usage:
  artificer -b BASE -f PATH[:DEST]... [-c CMD] [-e K=V]... -t REGISTRY/REPO:TAG [flags]
  artificer --spec artificer.json [-t REGISTRY/REPO:TAG] [flags]

Prints one line per repository pushed to on stdout: REGISTRY/REPO@sha256:…
Everything else (progress, -v logs, errors) goes to stderr.
Exit status: 0 success; 1 registry, network or other failure (a missing base image included);
2 bad flags, spec or files, or a platform the base lacks (no manifest or tag is written, though
base blobs may already be in the target); 130 / 143 stopped by SIGINT / SIGTERM.

Image:
  -b, --baseimage REF       Image to start FROM, or "scratch" for none.
                              -b alpine:3.20   -b gcr.io/distroless/static@sha256:…
  -f, --files SRC[:DEST]    File or directory to add (repeatable). Without DEST it lands at the
                            root under its own name; a directory keeps its name.
                              -f server        → /server
                              -f conf/         → /conf/…
                              -f .             → the current directory's contents at /
                                                 (also app/.; with :/srv/ under /srv)
                              -f dist/:/app/   → dist's contents under /app
                              -f server:/usr/local/bin/server
                              -f server:/usr/bin/   → /usr/bin/server (also /usr/bin/.)
  -c, --cmd CMD             Default command: a JSON array or a line split like a shell would
                            (no shell runs): -c '/server --port 80'  -c '["/server","--port","80"]'
      --entrypoint CMD      Entrypoint, same syntax. Clears the base's CMD unless -c is given;
                            --entrypoint '' clears the base's entrypoint.
  -e, --env K=V             Environment variable (repeatable), merged by key with the base's:
                            PATH stays unless you set it. -e LOGLEVEL=1
  -w, --workdir DIR         Working directory, an absolute path: -w /app
  -u, --user USER           User to run as: -u 65532 or -u 65532:65532 or -u nobody
  -l, --label K=V           Config label (repeatable): -l org.opencontainers.image.source=https://…
  -a, --annotation K=V      Manifest annotation, OCI bases only (repeatable).
      --expose PORT[/PROTO] Exposed port (repeatable): --expose 8080 --expose 53/udp
      --chown UID:GID       Owner of every added file (default 0:0): --chown 65532:65532
      --keep-setuid         Keep setuid/setgid bits of added files (dropped by default).
  -p, --platform P          linux/arch[/variant] to build (repeatable, or comma-separated), or
                            "all" for every Linux platform of the base (Windows entries are
                            skipped: only Linux images are built). Several → an index is pushed.
                            Default: the base's only Linux platform, else linux/amd64.
                              -p linux/arm64   -p linux/amd64,linux/arm64   -p all
  -s, --spec FILE           Read the build from a spec file (the Cloud Function's format); paths
                            in it are relative to the file. -t replaces its target (its bare
                            tags then follow -t's repository); --tag adds tags; -p replaces its
                            platforms. Refused with it: -b -f -c -e --entrypoint -w -u -l -a
                            --expose --chown (the spec defines the image).

Output:
  -t, --target REF          Where to push: -t registry.example.com/team/app:1.0
                            (docker.io is the default registry, as in docker). Repeatable, as
                            in docker build: the first is the target, the others are pushed
                            like --tag REF: -t app:$SHA -t app:latest
      --tag TAG|REF         Another tag to push the same image under (repeatable):
                            --tag latest   --tag other.example.com/app:1.0
                            Without -t, full references (REF) are where to push.
  -o, --output oci:DIR      Also (or instead) write an OCI image layout: -o oci:./image
                            (one entry per tag, found as oci:./image:TAG; "latest" if none)
  -o, --output tarball:FILE Also (or instead) write a "docker load" tarball: -o tarball:app.tar
      --digest-file FILE    Write the pushed digest (sha256:…) to FILE. With only -o outputs
                            stdout is empty: the digest (of the image in the OCI layout, if
                            one is written) is here, or in the -v log.
                            Output paths are checked before anything is pushed: a file's
                            directory must exist (an OCI layout's is created).
      --insecure-registry H Talk plain HTTP to registry host H[:PORT] (repeatable; a leading
                            http:// is accepted). Loopback hosts (localhost, 127.0.0.1) use
                            HTTP already, as docker does.
  -j, --concurrency N       Blob uploads in flight, 1 to 64 (default 4).

Other:
  -v, --verbose             Progress on stderr; -vv adds debug lines (requests, timings).
  -h, --help                This text.
      --version             Print the version.

Flags that take one value (-b, -c, -w, -u, -s, --digest-file, …) may be given once; the
repeatable ones (-f, -e, -l, -a, -t, -p, -o, --expose, --tag, --insecure-registry) say so;
-o once per kind (one oci:, one tarball:).

Credentials come from docker's config (DOCKER_CONFIG or ~/.docker/config.json: auths,
credHelpers, credsStore); without any, pulls and pushes are anonymous.
SOURCE_DATE_EPOCH sets the files' mtime and the image's creation time (default 1970-01-01),
so the same inputs give the same digest.

Example:
  artificer --baseimage alpine:3.20 --files server --files conf/ --cmd /server \\
    --env LOGLEVEL=1 --target localhost:5000/app:dev
`;

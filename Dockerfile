# duckstore in a container: built on Debian 12 with the same steps as a
# plain install (scripts/install-deps.sh build, make install), then the
# installed tree alone on a slim Debian 12 with the runtime libraries.
#
#   docker build -t duckstore .
#   docker run -v /etc/duckstore:/etc/duckstore:ro -v duckstore-data:/var/lib/duckstore \
#     --env-file /etc/duckstore/secrets.env -p 127.0.0.1:8500:8500 duckstore
#
# The config's duckdb.path belongs in /var/lib/duckstore (the volume).

FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN scripts/install-deps.sh build \
 && make install DESTDIR=/out PREFIX=/usr BUILD_DIR=/tmp/build \
 && rm -rf /var/lib/apt/lists/*

FROM debian:12-slim
# The shared libraries bin/duckstore needs besides libduckdb (installed in
# /usr/lib/duckstore): libpq, libyaml, libmicrohttpd, jansson, libcurl, OpenSSL
# (TLS and SCRAM of the PostgreSQL protocol); and
# libduckdb's C++ runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpq5 libyaml-0-2 libmicrohttpd12 libjansson4 libcurl4 libssl3 libstdc++6 libgcc-s1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/duckstore --create-home --shell /usr/sbin/nologin duckstore \
 && mkdir -p /etc/duckstore
COPY --from=build /out/usr/ /usr/
USER duckstore
WORKDIR /var/lib/duckstore
VOLUME /var/lib/duckstore
EXPOSE 8500
# SIGTERM stops it cleanly (give `docker stop` 30 s: -t 30); SIGHUP reloads
# the config directory.
STOPSIGNAL SIGTERM
ENTRYPOINT ["duckstore", "--config-dir", "/etc/duckstore"]
CMD ["serve", "--listen", "0.0.0.0:8500"]

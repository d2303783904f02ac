/*
 * A minimal TLS-terminating PostgreSQL relay in C: the floor of what any TLS-terminating proxy costs on
 * this machine, beside the bare Node.js relay (relay.ts), PgBouncer and the gateway in bench/gateway.ts.
 *
 * One thread, one epoll loop, non-blocking sockets and OpenSSL: it answers the SSLRequest with 'S', does
 * the TLS handshake (the gateway's certificate and cipher settings), opens a unix-socket connection to
 * PostgreSQL per client and copies bytes both ways, stopping a direction while its destination is full.
 * No parsing, no pooling, no audit: PostgreSQL authenticates the client over the relayed bytes.
 *
 *   cc -O2 -o crelay crelay.c -lssl -lcrypto
 *   ./crelay CERT KEY SOCKET     prints {"port":N} (127.0.0.1, a free port) and serves until SIGTERM
 *
 * A benchmark peer, not part of parhelion: bench/support/crelay.ts builds and starts it.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF 65536
#define MAXFD 65536

enum state { SSLREQ, HANDSHAKE, RELAY };

struct conn {
	int c, u;			/* client (TCP) and upstream (unix) descriptors */
	SSL *ssl;
	enum state st;
	unsigned char req[8];
	int reqlen;
	unsigned char *toup; size_t toup_len, toup_off;	/* client bytes waiting for the upstream */
	unsigned char *tocl; size_t tocl_len, tocl_off;	/* server bytes waiting for the client */
};

static int ep;
static struct conn *byfd[MAXFD];
static SSL_CTX *ctx;
static const char *upath;
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void) sig; stop = 1; }

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void watch(int op, int fd, unsigned ev)
{
	struct epoll_event e = { .events = ev, .data.fd = fd };
	epoll_ctl(ep, op, fd, &e);
}

static void drop(struct conn *k)
{
	if (k->ssl) SSL_free(k->ssl);
	if (k->c >= 0) { byfd[k->c] = NULL; close(k->c); }
	if (k->u >= 0) { byfd[k->u] = NULL; close(k->u); }
	free(k->toup); free(k->tocl); free(k);
}

/* Sets what each side waits for: read unless its destination is backed up, write while it owes bytes. */
static void rearm(struct conn *k)
{
	if (k->st != RELAY) return;
	watch(EPOLL_CTL_MOD, k->c, (k->toup_len ? 0 : EPOLLIN) | (k->tocl_len ? EPOLLOUT : 0));
	watch(EPOLL_CTL_MOD, k->u, (k->tocl_len ? 0 : EPOLLIN) | (k->toup_len ? EPOLLOUT : 0));
}

/* Writes what is pending to the upstream; 0 done or waiting, -1 dead. */
static int flush_up(struct conn *k)
{
	while (k->toup_len) {
		ssize_t n = write(k->u, k->toup + k->toup_off, k->toup_len);
		if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
		k->toup_off += (size_t) n; k->toup_len -= (size_t) n;
	}
	k->toup_off = 0;
	return 0;
}

static int flush_cl(struct conn *k)
{
	while (k->tocl_len) {
		int n = SSL_write(k->ssl, k->tocl + k->tocl_off, (int) k->tocl_len);
		if (n <= 0) {
			int e = SSL_get_error(k->ssl, n);
			return (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? 0 : -1;
		}
		k->tocl_off += (size_t) n; k->tocl_len -= (size_t) n;
	}
	k->tocl_off = 0;
	return 0;
}

/* Client → upstream, while the upstream takes it. */
static int pump_up(struct conn *k)
{
	while (!k->toup_len) {
		int n = SSL_read(k->ssl, k->toup, BUF);
		if (n <= 0) {
			int e = SSL_get_error(k->ssl, n);
			return e == SSL_ERROR_WANT_READ ? 0 : -1;
		}
		k->toup_len = (size_t) n; k->toup_off = 0;
		if (flush_up(k) < 0) return -1;
	}
	return 0;
}

/* Upstream → client, while the client takes it. */
static int pump_cl(struct conn *k)
{
	while (!k->tocl_len) {
		ssize_t n = read(k->u, k->tocl, BUF);
		if (n == 0) return -1;
		if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
		k->tocl_len = (size_t) n; k->tocl_off = 0;
		if (flush_cl(k) < 0) return -1;
	}
	return 0;
}

static int start_relay(struct conn *k)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	k->u = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (k->u < 0 || k->u >= MAXFD) return -1;
	strncpy(a.sun_path, upath, sizeof a.sun_path - 1);
	if (connect(k->u, (struct sockaddr *) &a, sizeof a) < 0 && errno != EINPROGRESS) return -1;
	k->toup = malloc(BUF); k->tocl = malloc(BUF);
	if (!k->toup || !k->tocl) return -1;
	byfd[k->u] = k;
	k->st = RELAY;
	watch(EPOLL_CTL_ADD, k->u, EPOLLIN);
	/* Bytes that came with the handshake's last flight may already be decrypted and buffered. */
	if (pump_up(k) < 0) return -1;
	rearm(k);
	return 0;
}

static int handshake(struct conn *k)
{
	int r = SSL_accept(k->ssl);
	if (r == 1) return start_relay(k);
	switch (SSL_get_error(k->ssl, r)) {
		case SSL_ERROR_WANT_READ: watch(EPOLL_CTL_MOD, k->c, EPOLLIN); return 0;
		case SSL_ERROR_WANT_WRITE: watch(EPOLL_CTL_MOD, k->c, EPOLLOUT); return 0;
		default: return -1;
	}
}

static int on_client(struct conn *k, unsigned ev)
{
	if (k->st == SSLREQ) {
		ssize_t n = read(k->c, k->req + k->reqlen, sizeof k->req - (size_t) k->reqlen);
		if (n == 0) return -1;
		if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
		k->reqlen += (int) n;
		if (k->reqlen < 8) return 0;
		if (ntohl(*(uint32_t *) (k->req + 4)) != 80877103u) return -1;
		if (write(k->c, "S", 1) != 1) return -1;
		k->ssl = SSL_new(ctx);
		if (!k->ssl) return -1;
		SSL_set_fd(k->ssl, k->c);
		k->st = HANDSHAKE;
		return handshake(k);
	}
	if (k->st == HANDSHAKE) return handshake(k);
	if ((ev & EPOLLOUT) && flush_cl(k) < 0) return -1;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && pump_up(k) < 0) return -1;
	/* Server bytes held back while the client was full. */
	if (!k->tocl_len && pump_cl(k) < 0) return -1;
	rearm(k);
	return 0;
}

static int on_upstream(struct conn *k, unsigned ev)
{
	if ((ev & EPOLLOUT) && flush_up(k) < 0) return -1;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && pump_cl(k) < 0) return -1;
	if (!k->toup_len && pump_up(k) < 0) return -1;
	rearm(k);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	struct epoll_event evs[256];
	int l, one = 1;

	if (argc != 4) { fprintf(stderr, "usage: crelay CERT KEY SOCKET\n"); return 2; }
	upath = argv[3];
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
		SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
		SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
		SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

	l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l < 0 || bind(l, (struct sockaddr *) &a, sizeof a) < 0 || listen(l, 512) < 0 ||
		getsockname(l, (struct sockaddr *) &a, &alen) < 0) {
		perror("listen");
		return 1;
	}
	printf("{\"port\":%d}\n", ntohs(a.sin_port));
	fflush(stdout);
	ep = epoll_create1(0);
	watch(EPOLL_CTL_ADD, l, EPOLLIN);
	while (!stop) {
		int n = epoll_wait(ep, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			struct conn *k;
			if (fd == l) {
				int c;
				while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					if (c >= MAXFD) { close(c); continue; }
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
					k = calloc(1, sizeof *k);
					if (!k) { close(c); continue; }
					k->c = c; k->u = -1; k->st = SSLREQ;
					byfd[c] = k;
					watch(EPOLL_CTL_ADD, c, EPOLLIN);
				}
				continue;
			}
			k = byfd[fd];
			if (!k) continue;
			if ((fd == k->c ? on_client(k, evs[i].events) : on_upstream(k, evs[i].events)) < 0) drop(k);
		}
	}
	return 0;
}

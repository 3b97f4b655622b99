/*
 * loadclient: TLS 1.3 load generator for bench.py (C, GnuTLS), talking to 127.0.0.1:PORT.
 *
 *   loadclient hs     PORT CAFILE CONCURRENCY WARMUP_S SECONDS   full handshakes
 *   loadclient resume PORT CAFILE CONCURRENCY WARMUP_S SECONDS   resumed handshakes
 *   loadclient echo   PORT CAFILE WARMUP_MIB MIB                 bulk echo, one connection
 *   loadclient rr     PORT CAFILE CONNS BYTES WARMUP_S SECONDS   request/response
 *
 * Output, for bench.py to time the server around: the line "WINDOW <count> <resumed>" when
 * the warm-up is over, then one JSON line with the totals when the measured part is.
 *
 * Handshakes (one thread, epoll): keeps CONCURRENCY connections to 127.0.0.1:PORT going: connect, handshake (X25519), read
 * the server's b"x", close without close_notify, repeat. Each slot's first handshake verifies
 * the server as "localhost" against CAFILE; later ones skip the chain check (the server still
 * proves its key with CertificateVerify) to spare client CPU. With RESUME=1 each slot offers
 * the newest session ticket it has received. Only a slot without any ticket waits for one
 * after b"x" (up to 1 s: Node sends its tickets after the data, and none on resumption).
 *
 *
 * Echo (two threads, blocking): one connection; a writer sends 64 KiB chunks while at most
 * 1 MiB is in flight, a reader counts the echo (GnuTLS allows one sender and one receiver
 * thread per session). WARMUP_MIB first, then MIB measured.
 *
 * Request/response (one thread, epoll): CONNS connections, each handshaken up front; each
 * sends BYTES, waits for the BYTES of echo, and sends again at once. Every request's latency
 * (send to last byte of its echo) within the measured window goes into a histogram of 1 us
 * buckets; the totals add "p50_us", "p99_us" and "max_us".
 *
 * GnuTLS rather than OpenSSL because OpenSSL 3.0 spends ~1.5 ms of client CPU per full
 * handshake (certificate decoding), which would leave the servers under-loaded; and C rather
 * than Python so that the client outpaces the server in bulk echo too.
 *
 * Build: cc -O2 -pthread -o loadclient loadclient.c $(pkg-config --cflags --libs gnutls)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 1024
#define CONN_TIMEOUT 10.0 /* seconds for one connection, start to finish */
#define TICKET_WAIT 1.0   /* seconds to wait after b"x" for a late ticket */
#define PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-GROUP-ALL:+GROUP-X25519"
#define CHUNK (64 * 1024)
#define WINDOW (1024 * 1024)
#define MIB (1024 * 1024)

enum state { IDLE, CONNECTING, HANDSHAKING, READING };

struct conn {
    int fd;
    gnutls_session_t tls;
    enum state st;
    double started, got_x_at;
    int got_x, got_ticket;
    int drained; /* the last recv() found the socket empty */
};

static struct conn conns[MAX_SLOTS];
static gnutls_datum_t tickets[MAX_SLOTS]; /* newest resumption data per slot */
static int verified[MAX_SLOTS];            /* the slot has verified the server's chain */
static gnutls_certificate_credentials_t cred;
static gnutls_priority_t prio;
static int epfd, port, resume, expect_tickets = 1;
static long ops, reused, failures;
static char first_error[256], cipher[64];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void note_error(const char *what, const char *why) {
    failures++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s: %s", what, why);
}

static int on_ticket(gnutls_session_t tls, unsigned htype, unsigned when, unsigned incoming,
                     const gnutls_datum_t *msg) {
    (void)htype; (void)when; (void)incoming; (void)msg;
    ((struct conn *)gnutls_session_get_ptr(tls))->got_ticket = 1;
    return 0;
}

/* Our own transport, to learn whether a GNUTLS_E_AGAIN means "socket empty": after a
 * post-handshake message GnuTLS can return it with a record still in its buffer. */
static ssize_t pull(gnutls_transport_ptr_t ptr, void *data, size_t len) {
    struct conn *c = ptr;
    ssize_t r = recv(c->fd, data, len, 0);
    if (r < 0 && errno == EAGAIN) c->drained = 1;
    return r;
}

static ssize_t push(gnutls_transport_ptr_t ptr, const void *data, size_t len) {
    return send(((struct conn *)ptr)->fd, data, len, MSG_NOSIGNAL);
}

static int pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms) {
    struct pollfd p = {.fd = ((struct conn *)ptr)->fd, .events = POLLIN};
    return poll(&p, 1, (int)ms);
}

static void close_conn(struct conn *c) {
    if (c->tls) gnutls_deinit(c->tls); /* no close_notify, like the Python client */
    if (c->fd >= 0) close(c->fd);
    c->tls = NULL;
    c->fd = -1;
    c->st = IDLE;
}

static void start_conn(long slot) {
    struct conn *c = &conns[slot];
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->started = now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { note_error("socket", strerror(errno)); c->st = IDLE; return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        note_error("connect", strerror(errno));
        close_conn(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)slot};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->st = CONNECTING;
}

static void finish(long slot) {
    struct conn *c = &conns[slot];
    if (resume && c->got_ticket) {
        gnutls_free(tickets[slot].data);
        tickets[slot].data = NULL;
        if (gnutls_session_get_data2(c->tls, &tickets[slot]) < 0) tickets[slot].data = NULL;
    }
    ops++;
    close_conn(c);
    start_conn(slot);
}

static void fail(long slot, const char *what, const char *why) {
    note_error(what, why);
    close_conn(&conns[slot]);
    start_conn(slot);
}

/* Advance one connection as far as it can go without blocking. */
static void drive(long slot) {
    struct conn *c = &conns[slot];
    if (c->st == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { fail(slot, "connect", strerror(err)); return; }
        gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
        gnutls_session_set_ptr(c->tls, c);
        gnutls_priority_set(c->tls, prio);
        gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, cred);
        gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, "localhost", 9);
        if (!verified[slot]) gnutls_session_set_verify_cert(c->tls, "localhost", 0);
        gnutls_transport_set_ptr(c->tls, c);
        gnutls_transport_set_pull_function(c->tls, pull);
        gnutls_transport_set_push_function(c->tls, push);
        gnutls_transport_set_pull_timeout_function(c->tls, pull_timeout);
        gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
                                           GNUTLS_HOOK_POST, on_ticket);
        if (resume && tickets[slot].data)
            gnutls_session_set_data(c->tls, tickets[slot].data, tickets[slot].size);
        c->st = HANDSHAKING;
    }
    if (c->st == HANDSHAKING) {
        int r;
        do {
            c->drained = 0;
            r = gnutls_handshake(c->tls);
        } while ((r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) && !c->drained &&
                 gnutls_record_get_direction(c->tls) == 0);
        if (r < 0) {
            if (gnutls_error_is_fatal(r)) fail(slot, "handshake", gnutls_strerror(r));
            return;
        }
        reused += gnutls_session_is_resumed(c->tls) != 0;
        verified[slot] = 1;
        if (!cipher[0]) {
            char *desc = gnutls_session_get_desc(c->tls);
            snprintf(cipher, sizeof cipher, "%s", desc);
            gnutls_free(desc);
        }
        c->st = READING;
    }
    if (c->st == READING) {
        char buf[4096];
        for (;;) {
            c->drained = 0;
            ssize_t r = gnutls_record_recv(c->tls, buf, sizeof buf);
            if (r > 0) {
                if (!c->got_x) { c->got_x = 1; c->got_x_at = now(); }
                continue;
            }
            if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
                if (c->drained) break;
                continue;
            }
            if (!c->got_x) { fail(slot, "read", r ? gnutls_strerror((int)r) : "EOF"); return; }
            break; /* EOF or error after b"x": the handshake itself is done */
        }
        if (c->got_x && (!resume || c->got_ticket || tickets[slot].data || !expect_tickets))
            finish(slot);
    }
}

static int handshakes(int concurrency, double warmup, double seconds) {
    if (concurrency < 1 || concurrency > MAX_SLOTS) {
        fprintf(stderr, "bad concurrency\n");
        return 2;
    }
    epfd = epoll_create1(0);
    for (long i = 0; i < concurrency; i++) start_conn(i);

    double t_window = now() + warmup, t_end = t_window + seconds;
    int in_window = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (!in_window && t >= t_window) {
            printf("WINDOW %ld %ld\n", ops, reused);
            fflush(stdout);
            in_window = 1;
        }
        if (t >= t_end || (failures > 1000 && ops == 0)) break; /* done, or hopeless */
        int n = epoll_wait(epfd, evs, 256, 20);
        for (int i = 0; i < n; i++) {
            long slot = (long)evs[i].data.u64;
            if (conns[slot].st != IDLE) drive(slot);
        }
        t = now();
        for (long i = 0; i < concurrency; i++) {
            struct conn *c = &conns[i];
            if (c->st == IDLE) start_conn(i);
            else if (t - c->started > CONN_TIMEOUT) fail(i, "timeout", "no progress");
            else if (c->got_x && t - c->got_x_at > TICKET_WAIT) {
                expect_tickets = 0; /* this server sends none: stop waiting for them */
                finish(i);
            }
        }
    }
    printf("{\"count\": %ld, \"reused\": %ld, \"failures\": %ld, \"cipher\": \"%s\", "
           "\"first_error\": \"%s\"}\n", ops, reused, failures, cipher, first_error);
    fflush(stdout);
    for (long i = 0; i < concurrency; i++) close_conn(&conns[i]);
    return 0;
}

/* ---- bulk echo ---- */

static gnutls_session_t echo_tls;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t room = PTHREAD_COND_INITIALIZER;
static long long sent, received; /* bytes */
static int echo_failed;

/* Count echoed bytes until EOF or an error (main() shuts the socket down at the end). */
static void *echo_reader(void *arg) {
    (void)arg;
    static char buf[256 * 1024];
    for (;;) {
        ssize_t r = gnutls_record_recv(echo_tls, buf, sizeof buf);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
        pthread_mutex_lock(&lock);
        if (r <= 0) {
            echo_failed = 1;
            if (!first_error[0])
                snprintf(first_error, sizeof first_error, "recv: %s",
                         r ? gnutls_strerror((int)r) : "EOF");
        } else {
            received += r;
        }
        pthread_cond_broadcast(&room);
        pthread_mutex_unlock(&lock);
        if (r <= 0) return NULL;
    }
}

/* GnuTLS hands each 16 KiB record to this push function; flush_out() then sends the whole
 * 64 KiB chunk's records with one send(), as a 64 KiB write on any TLS stack would. */
static char out[2 * CHUNK];
static size_t out_len;
static int echo_fd;

static ssize_t buffered_push(gnutls_transport_ptr_t ptr, const void *data, size_t len) {
    (void)ptr;
    if (out_len + len > sizeof out) { errno = ENOBUFS; return -1; }
    memcpy(out + out_len, data, len);
    out_len += len;
    return (ssize_t)len;
}

static int flush_out(void) {
    for (size_t off = 0; off < out_len;) {
        ssize_t w = send(echo_fd, out + off, out_len - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EINTR) return -1;
        if (w > 0) off += (size_t)w;
    }
    out_len = 0;
    return 0;
}

/* Send `bytes` more in CHUNK writes, then wait until all of it has come back. */
static int transfer(long long bytes, const char *chunk) {
    pthread_mutex_lock(&lock);
    long long target = sent + bytes;
    pthread_mutex_unlock(&lock);
    while (!echo_failed) {
        pthread_mutex_lock(&lock);
        while (!echo_failed && sent < target && sent - received >= WINDOW)
            pthread_cond_wait(&room, &lock);
        int more = sent < target;
        pthread_mutex_unlock(&lock);
        if (!more) break;
        for (size_t off = 0; off < CHUNK;) {
            ssize_t w = gnutls_record_send(echo_tls, chunk + off, CHUNK - off);
            if (w < 0) {
                snprintf(first_error, sizeof first_error, "send: %s", gnutls_strerror((int)w));
                return -1;
            }
            off += (size_t)w;
        }
        if (flush_out() < 0) {
            snprintf(first_error, sizeof first_error, "send: %s", strerror(errno));
            return -1;
        }
        pthread_mutex_lock(&lock);
        sent += CHUNK;
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    while (!echo_failed && received < target) pthread_cond_wait(&room, &lock);
    pthread_mutex_unlock(&lock);
    return echo_failed ? -1 : 0;
}

static int echo(long warmup_mib, long mib) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "connect: %s\n", strerror(errno));
        return 1;
    }
    gnutls_init(&echo_tls, GNUTLS_CLIENT);
    gnutls_priority_set(echo_tls, prio);
    gnutls_credentials_set(echo_tls, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_server_name_set(echo_tls, GNUTLS_NAME_DNS, "localhost", 9);
    gnutls_session_set_verify_cert(echo_tls, "localhost", 0);
    gnutls_transport_set_int(echo_tls, fd);
    int r;
    do r = gnutls_handshake(echo_tls); while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
        fprintf(stderr, "handshake: %s\n", gnutls_strerror(r));
        return 1;
    }
    char *desc = gnutls_session_get_desc(echo_tls);
    snprintf(cipher, sizeof cipher, "%s", desc);
    gnutls_free(desc);
    echo_fd = fd;
    gnutls_transport_set_vec_push_function(echo_tls, NULL);
    gnutls_transport_set_push_function(echo_tls, buffered_push);

    static char chunk[CHUNK];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (char)rand();
    pthread_t reader;
    pthread_create(&reader, NULL, echo_reader, NULL);
    int ok = transfer(warmup_mib * MIB, chunk) == 0;
    if (ok) {
        printf("WINDOW %lld 0\n", received);
        fflush(stdout);
        ok = transfer(mib * MIB, chunk) == 0;
    }
    printf("{\"count\": %lld, \"reused\": 0, \"failures\": %d, \"cipher\": \"%s\", "
           "\"first_error\": \"%s\"}\n", received, !ok, cipher, first_error);
    fflush(stdout);
    shutdown(fd, SHUT_RDWR); /* wakes the reader: it sees EOF and returns */
    pthread_join(reader, NULL);
    gnutls_deinit(echo_tls);
    close(fd);
    return ok ? 0 : 1;
}

/* ---- request/response ---- */

#define HIST_US 200000 /* latency histogram: 1 us buckets up to 200 ms, the rest in the last */
#define MAX_MSG 65536

static unsigned hist[HIST_US];
static double max_latency;

struct rr_conn {
    struct conn c; /* fd, tls, drained: the handshake code's transport callbacks use them */
    double sent_at;
    long got;      /* bytes of the current request's echo received so far */
};

static struct rr_conn rrs[MAX_SLOTS];
static char request[MAX_MSG];

static void clear_slots(void) { /* so that close_conn() skips the slots never opened */
    for (int i = 0; i < MAX_SLOTS; i++) rrs[i].c.fd = -1;
}

static void record_latency(double seconds) {
    long us = (long)(seconds * 1e6);
    hist[us < HIST_US ? us : HIST_US - 1]++;
    if (seconds > max_latency) max_latency = seconds;
}

static long percentile_us(long total, double q) {
    if (total == 0) return 0;
    long seen = 0, rank = (long)(q * (double)total);
    for (long us = 0; us < HIST_US; us++)
        if ((seen += hist[us]) > rank) return us;
    return HIST_US - 1;
}

/* Send one request (on a non-blocking socket: waits for room, at most CONN_TIMEOUT s). */
static int send_request(struct rr_conn *r, long bytes) {
    r->sent_at = now();
    r->got = 0;
    for (;;) {
        ssize_t w = gnutls_record_send(r->c.tls, request, (size_t)bytes);
        if (w == bytes) return 0;
        if (w != GNUTLS_E_AGAIN && w != GNUTLS_E_INTERRUPTED) {
            note_error("send", w < 0 ? gnutls_strerror((int)w) : "short write");
            return -1;
        }
        struct pollfd p = {.fd = r->c.fd, .events = POLLOUT};
        if (poll(&p, 1, (int)(CONN_TIMEOUT * 1000)) <= 0) {
            note_error("send", "no room in the socket");
            return -1;
        }
    }
}

/* Connect and handshake (blocking), checking the server's chain. */
static int rr_connect(struct rr_conn *r) {
    struct conn *c = &r->c;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        note_error("connect", strerror(errno));
        return -1;
    }
    gnutls_init(&c->tls, GNUTLS_CLIENT);
    gnutls_priority_set(c->tls, prio);
    gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, "localhost", 9);
    gnutls_session_set_verify_cert(c->tls, "localhost", 0);
    gnutls_transport_set_ptr(c->tls, c);
    gnutls_transport_set_pull_function(c->tls, pull);
    gnutls_transport_set_push_function(c->tls, push);
    int h;
    do h = gnutls_handshake(c->tls); while (h < 0 && !gnutls_error_is_fatal(h));
    if (h < 0) {
        note_error("handshake", gnutls_strerror(h));
        return -1;
    }
    if (!cipher[0]) {
        char *desc = gnutls_session_get_desc(c->tls);
        snprintf(cipher, sizeof cipher, "%s", desc);
        gnutls_free(desc);
    }
    return 0;
}

/* Read what the socket has; on each complete echo count it and send the next request. */
static int rr_drive(struct rr_conn *r, long bytes, int in_window) {
    static char buf[MAX_MSG];
    for (;;) {
        r->c.drained = 0;
        ssize_t n = gnutls_record_recv(r->c.tls, buf, sizeof buf);
        if (n > 0) {
            if ((r->got += n) > bytes) { note_error("recv", "more than was sent"); return -1; }
            if (r->got < bytes) continue;
            ops++;
            if (in_window) record_latency(now() - r->sent_at);
            if (send_request(r, bytes) < 0) return -1;
            continue;
        }
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            if (r->c.drained) return 0;
            continue;
        }
        note_error("recv", n ? gnutls_strerror((int)n) : "EOF");
        return -1;
    }
}

static int request_response(int nconns, long bytes, double warmup, double seconds) {
    if (nconns < 1 || nconns > MAX_SLOTS || bytes < 1 || bytes > MAX_MSG) {
        fprintf(stderr, "bad connection count or message size\n");
        return 2;
    }
    for (size_t i = 0; i < (size_t)bytes; i++) request[i] = (char)rand();
    epfd = epoll_create1(0);
    clear_slots();
    int ok = 1;
    for (int i = 0; i < nconns && ok; i++) {
        ok = rr_connect(&rrs[i]) == 0;
        ok = ok && fcntl(rrs[i].c.fd, F_SETFL, O_NONBLOCK) == 0; /* for the epoll loop */
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        ok = ok && epoll_ctl(epfd, EPOLL_CTL_ADD, rrs[i].c.fd, &ev) == 0;
    }
    for (int i = 0; i < nconns && ok; i++) ok = send_request(&rrs[i], bytes) == 0;

    double t_window = now() + warmup, t_end = t_window + seconds;
    int in_window = 0;
    struct epoll_event evs[MAX_SLOTS];
    while (ok) {
        double t = now();
        if (!in_window && t >= t_window) {
            printf("WINDOW %ld 0\n", ops);
            fflush(stdout);
            in_window = 1;
        }
        if (t >= t_end) break;
        int n = epoll_wait(epfd, evs, MAX_SLOTS, 20);
        for (int i = 0; i < n && ok; i++) ok = rr_drive(&rrs[evs[i].data.u64], bytes, in_window) == 0;
        t = now();
        for (int i = 0; i < nconns && ok; i++)
            if (t - rrs[i].sent_at > CONN_TIMEOUT) {
                note_error("timeout", "no echo");
                ok = 0;
            }
    }
    long measured = 0;
    for (long us = 0; us < HIST_US; us++) measured += hist[us];
    printf("{\"count\": %ld, \"reused\": 0, \"failures\": %ld, \"cipher\": \"%s\", "
           "\"first_error\": \"%s\", \"p50_us\": %ld, \"p99_us\": %ld, \"max_us\": %.0f}\n",
           ops, failures, cipher, first_error, percentile_us(measured, 0.50),
           percentile_us(measured, 0.99), max_latency * 1e6);
    fflush(stdout);
    for (int i = 0; i < nconns; i++) close_conn(&rrs[i].c);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int is_hs = !strcmp(mode, "hs") || !strcmp(mode, "resume"), is_rr = !strcmp(mode, "rr");
    if (!((is_hs && argc == 7) || (!strcmp(mode, "echo") && argc == 6) || (is_rr && argc == 8))) {
        fprintf(stderr,
                "usage: %s hs|resume PORT CAFILE CONCURRENCY WARMUP_S SECONDS\n"
                "       %s echo PORT CAFILE WARMUP_MIB MIB\n"
                "       %s rr PORT CAFILE CONNS BYTES WARMUP_S SECONDS\n",
                argv[0], argv[0], argv[0]);
        return 2;
    }
    port = atoi(argv[2]);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive bench.py's client process */
    alarm(900);                       /* nor run away: SIGALRM ends the process */
    gnutls_global_init();
    gnutls_certificate_allocate_credentials(&cred);
    if (gnutls_certificate_set_x509_trust_file(cred, argv[3], GNUTLS_X509_FMT_PEM) < 1) {
        fprintf(stderr, "cannot load %s\n", argv[3]);
        return 2;
    }
    if (gnutls_priority_init(&prio, PRIORITY, NULL) < 0) {
        fprintf(stderr, "bad priority string\n");
        return 2;
    }
    if (is_rr) return request_response(atoi(argv[4]), atol(argv[5]), atof(argv[6]), atof(argv[7]));
    if (!is_hs) return echo(atol(argv[4]), atol(argv[5]));
    resume = !strcmp(mode, "resume");
    return handshakes(atoi(argv[4]), atof(argv[5]), atof(argv[6]));
}

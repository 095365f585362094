/* httpcheck: the HEALTHCHECK of the gateway and proxy images until those
 * binaries have a health-check subcommand of their own. A scratch image has no
 * curl or shell, so this is a static, dependency-free HTTP/1.0 GET.
 *
 * Usage: httpcheck http://IP:PORT/PATH
 * Exits 0 when the answer's status is 200, 1 otherwise (within 2 seconds). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *why) {
    fprintf(stderr, "httpcheck: %s\n", why);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2 || strncmp(argv[1], "http://", 7) != 0)
        return fail("usage: httpcheck http://IP:PORT/PATH");
    alarm(2); /* the whole check, connect included */

    char host[64];
    const char *start = argv[1] + 7;
    const char *slash = strchr(start, '/');
    const char *path = slash != NULL ? slash : "/";
    size_t len = slash != NULL ? (size_t)(slash - start) : strlen(start);
    if (len == 0 || len >= sizeof host)
        return fail("bad address");
    memcpy(host, start, len);
    host[len] = '\0';
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return fail("address needs a port: http://IP:PORT/PATH");
    *colon = '\0';

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        return fail("host must be an IPv4 literal");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return fail("cannot connect");
    char request[512];
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    if (n <= 0 || (size_t)n >= sizeof request || write(fd, request, (size_t)n) != n)
        return fail("cannot send the request");

    char answer[64] = {0};
    size_t got = 0;
    while (got < sizeof answer - 1) {
        ssize_t r = read(fd, answer + got, sizeof answer - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    /* "HTTP/1.1 200 OK" */
    char *space = strchr(answer, ' ');
    if (space == NULL)
        return fail("no HTTP answer");
    if (strncmp(space + 1, "200", 3) != 0) {
        fprintf(stderr, "httpcheck: %s answered %.3s\n", argv[1], space + 1);
        return 1;
    }
    return 0;
}

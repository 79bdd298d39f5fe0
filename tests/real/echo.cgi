#!/bin/sh
# Test CGI for tests/real_servers.rs. Reads the whole request body (CONTENT_LENGTH bytes) from
# stdin, as a real form handler does, so a slow body really holds the server; then answers how
# many bytes it got. With a query string TAG ([A-Za-z0-9_-] only) it also records that count in
# uploads/TAG (the servers run CGIs in the script's directory): mini_httpd loses the response
# of a POST to a CGI (see real_servers.rs), so the upload check reads the count from there.
n=$(head -c "${CONTENT_LENGTH:-0}" | wc -c)
case "$QUERY_STRING" in
  '' | *[!A-Za-z0-9_-]*) ;;
  *) echo "$n" >"uploads/$QUERY_STRING" ;;
esac
printf 'Content-Type: text/plain\r\n\r\nread %s\n' "$n"

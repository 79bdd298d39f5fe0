// The JDK's built-in HTTP server (com.sun.net.httpserver) with a fixed pool of workers: its
// dispatcher accepts eagerly, registers each connection for reading, then deregisters it and
// queues it for a worker once the request is readable. For the lens tests.
//   java QueueServer.java PORT WORKERS
//   GET /wait?ms=N answers after N ms; anything else answers "ok".
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;

public class QueueServer {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        int workers = Integer.parseInt(args[1]);
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 64);
        server.createContext("/", exchange -> {
            exchange.getRequestBody().readAllBytes();
            String query = exchange.getRequestURI().getQuery();
            long ms = 0;
            if (exchange.getRequestURI().getPath().equals("/wait") && query != null && query.startsWith("ms=")) {
                ms = Long.parseLong(query.substring(3));
            }
            try { Thread.sleep(ms); } catch (InterruptedException e) { }
            byte[] body = ("waited " + ms + "\n").getBytes();
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) { out.write(body); }
        });
        server.setExecutor(Executors.newFixedThreadPool(workers));
        server.start();
        System.out.println("listening " + port);
    }
}

package exposition;
import io.prometheus.client.*;
import io.prometheus.client.exporter.common.TextFormat;
import io.prometheus.client.hotspot.DefaultExports;
import java.io.*;
public class Main {
  public static void main(String[] args) throws Exception {
    DefaultExports.initialize();
    Counter c = Counter.build().name("orders_total").help("Orders.").labelNames("shop").register();
    c.labels("eu").inc(3);
    Histogram h = Histogram.build().name("latency_seconds").help("Latency.").register();
    h.observe(0.3);
    Summary s = Summary.build().name("payload_bytes").help("Payload.").quantile(0.5, 0.05).register();
    s.observe(512);
    Writer w = new OutputStreamWriter(System.out);
    String type = args.length > 0 && args[0].equals("om") ? TextFormat.CONTENT_TYPE_OPENMETRICS_100 : TextFormat.CONTENT_TYPE_004;
    TextFormat.writeFormat(type, w, CollectorRegistry.defaultRegistry.metricFamilySamples());
    w.flush();
  }
}

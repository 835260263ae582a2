import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Offline stand-in for the Storage emulator's security-rules runtime, which firebase-tools would
 * otherwise download. It speaks the runtime's line-delimited JSON protocol and permits every
 * request. shardline talks to the emulator through @google-cloud/storage's admin API, which
 * never consults rules, so open rules change nothing for the tests.
 */
public final class RulesStub {
  private static final Pattern REQUEST_ID = Pattern.compile("\"id\":(-?\\d+)\\}\\s*$");

  public static void main(String[] args) throws IOException {
    PrintStream out =
        new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    out.println("{\"id\":-1,\"status\":\"ok\"}");
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      Matcher m = REQUEST_ID.matcher(line);
      if (!m.find()) {
        continue;
      }
      String id = m.group(1);
      String result =
          line.contains("\"action\":\"load_ruleset\"")
              ? "{\"rulesVersion\":\"2\"}"
              : "{\"permit\":true}";
      out.println(
          "{\"id\":" + id + ",\"status\":\"ok\",\"errors\":[],\"warnings\":[],\"result\":" + result + "}");
    }
  }
}

# Prints <short host name>-<environment>-<first 11 hex of the deployed commit>.
require 'json'
require 'socket'

deploy = JSON.parse(File.read(File.join(ARGV[0], ARGV[1], '.r10k-deploy.json')))
puts "#{Socket.gethostname.split('.').first}-#{ARGV[1]}-#{deploy['signature'][0, 11]}"
